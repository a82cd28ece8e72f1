"""The README's Python SDK examples: each compiles, and the token example runs as written."""

from __future__ import annotations

import re

import jwt
import pytest

from tests.support.servers import ROOT
from tests.support.tokens import SECRET


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Python SDK\n")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_every_sdk_example_in_the_readme_compiles() -> None:
    blocks = _python_blocks()
    assert len(blocks) == 3
    for block in blocks:
        compile(block, "README.md", "exec")


def test_the_readme_token_example_makes_tokens_the_servers_secret_verifies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FANOUT_TOKEN_HMAC_SECRET", SECRET)
    [block] = [b for b in _python_blocks() if "connection_token(" in b]
    names: dict[str, object] = {}
    exec(block, names)
    claims = jwt.decode(str(names["token"]), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "42" and claims["info"] == {"name": "Ada"}
    vip = jwt.decode(str(names["vip"]), SECRET, algorithms=["HS256"])
    assert vip["channel"] == "vip.room"
