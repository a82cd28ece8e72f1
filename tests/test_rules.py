"""Channel rules: ordered globs, first match wins, the built-in open default, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.services.rules import DEFAULT_RULE, ChannelRules, RulesError
from tests.support.servers import ROOT

RULES = """
[[channels]]
match = "public.*"
subscribe = "any"
publish = "none"

[[channels]]
match = "chat.*"
subscribe = "authenticated"
publish = "subscribers"
presence = true
join_leave = true
history_size = 100
history_ttl = 600
"""


def test_first_match_wins_and_the_default_is_open() -> None:
    rules = ChannelRules.from_toml(RULES)
    assert rules.rule_for("public.news").publish == "none"
    chat = rules.rule_for("chat.lobby")
    assert (chat.subscribe, chat.presence, chat.history_size) == ("authenticated", True, 100)
    assert rules.rule_for("anything") is DEFAULT_RULE
    assert (DEFAULT_RULE.subscribe, DEFAULT_RULE.publish) == ("any", "subscribers")
    assert ChannelRules().rule_for("x") is DEFAULT_RULE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[channels]]\nmatch = "a"\nsubscribe = "some"', "line 1: [[channels]] #1: subscribe"),
        (
            '[[channels]]\nmatch = "a"\n\n[[channels]]\nmatch = "b"\npublsh = "any"',
            "line 4: [[channels]] #2: unknown key 'publsh'; did you mean 'publish'?",
        ),
        ('[[channels]]\nsubscribe = "any"', "'match' is required"),
        ('[[channels]]\nmatch = "a"\nhistory_size = -1', "history_size=-1"),
        ('[[channels]]\nmatch = "a"\npresence = "yes"', "presence='yes'"),
        ("[[channels]\nmatch = 1", "line 1"),
        ("[other]\nx = 1", "unknown table 'other'"),
    ],
)
def test_a_bad_rules_file_says_where_and_why(text: str, expected: str) -> None:
    with pytest.raises(RulesError, match=None) as info:
        ChannelRules.from_toml(text)
    assert expected in str(info.value)


def test_a_bad_rules_file_stops_the_server_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "fanout.toml"
    path.write_text('[[channels]]\nmatch = "a"\nsubscribe = "everyone"\n')
    result = subprocess.run(
        [sys.executable, "-c", "import app.main"],
        cwd=ROOT,
        env={"FANOUT_CONFIG": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 3
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "FANOUT_CONFIG=" in lines[0] and "subscribe='everyone'" in lines[0]
    assert "line 1" in lines[0]
