"""A bad FANOUT_* value stops the server with one line naming it, whatever the worker count.

Real ``python -m uvicorn app.main:app`` processes, as a user starts them: one worker and
``--workers 4`` (where uvicorn's supervisor would otherwise exit 0, or restart the workers
forever). An unknown FANOUT_* variable is a warning with the closest known name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from app.config import Settings, SettingsError, unknown_variables
from tests.support.redis_server import RedisServer
from tests.support.servers import ROOT, ServerProcess, free_port
from tests.support.waiting import wait_for


def _clean_env(**fanout: str) -> dict[str, str]:
    """The test's environment without any FANOUT_* variable, plus ``fanout``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    return {**env, "FANOUT_STATS_LOG_INTERVAL": "0", **fanout}


def _run_uvicorn(env: dict[str, str], workers: int) -> tuple[int, str, int]:
    """Run the server until it exits by itself: (exit status, its output, its port)."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    # Output is read to its end: that includes whatever any worker (even an orphan) wrote.
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stdout + done.stderr, port


def _processes_on(port: int) -> list[int]:
    """Pids of processes started with ``--port <port>`` (a worker left behind, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--port" in argv and str(port).encode() in argv:
            found.append(int(entry.name))
    return found


def _under_a_file(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return str(blocker / "sockets")


BAD_SETTINGS: dict[str, tuple[str, Callable[[Path], str], str]] = {
    "not a number": ("FANOUT_MAX_CONNECTIONS", lambda _: "abc", "whole number"),
    "unknown log level": ("FANOUT_LOG_LEVEL", lambda _: "loud", "critical, error, warning"),
    "local dir under a file": ("FANOUT_LOCAL_DIR", _under_a_file, "not a directory"),
    "out of range": ("FANOUT_CLOSE_TIMEOUT", lambda _: "0", "> 0"),
    "unknown backend": ("FANOUT_BACKEND", lambda _: "carrier-pigeon://", "local://"),
    "history file is a folder": ("FANOUT_HISTORY_FILE", str, "it is a directory"),
}


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_a_bad_setting_is_one_line_and_a_failed_exit(
    case: str, workers: int, tmp_path: Path
) -> None:
    variable, make_value, allowed = BAD_SETTINGS[case]
    value = make_value(tmp_path)
    status, output, port = _run_uvicorn(_clean_env(**{variable: value}), workers)

    assert status != 0, output
    mentions = [line for line in output.splitlines() if variable in line]
    assert len(mentions) == 1, output
    assert repr(value) in mentions[0], output
    assert allowed in mentions[0], output
    assert "Traceback" not in output, output
    # Every worker is gone too (none left serving or restarting).
    assert wait_for(lambda: not _processes_on(port), timeout=10), _processes_on(port)


def test_the_error_line_is_json_when_the_log_format_is_json() -> None:
    env = _clean_env(FANOUT_LOG_FORMAT="json", FANOUT_MAX_CONNECTIONS="-1")
    status, output, _ = _run_uvicorn(env, 1)
    assert status != 0
    [line] = output.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["message"].startswith("FANOUT_MAX_CONNECTIONS='-1': ")


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unknown_variable_is_one_warning_with_the_closest_name(workers: int) -> None:
    args = ["--workers", str(workers)] if workers > 1 else []
    server = ServerProcess(_clean_env(FANOUT_MAX_CONECTIONS="5"), args).start()
    try:
        started = "Application startup complete"
        assert wait_for(lambda: server.log().count(started) == workers), server.log()
        warnings = [line for line in server.log().splitlines() if "FANOUT_MAX_CONECTIONS" in line]
        assert len(warnings) == 1, server.log()
        assert "WARNING" in warnings[0]
        assert "did you mean FANOUT_MAX_CONNECTIONS?" in warnings[0]
    finally:
        server.stop()


def test_a_history_file_with_redis_is_one_warning_saying_it_is_ignored(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = _clean_env(FANOUT_BACKEND=redis_server.url, FANOUT_HISTORY_FILE=str(tmp_path / "h"))
    server = ServerProcess(env, ["--workers", "2"]).start()
    try:
        started = "Application startup complete"
        assert wait_for(lambda: server.log().count(started) == 2), server.log()
        warnings = [line for line in server.log().splitlines() if "FANOUT_HISTORY_FILE" in line]
        assert len(warnings) == 1, server.log()
        assert "WARNING" in warnings[0] and "history is kept in Redis" in warnings[0]
    finally:
        server.stop()
    assert not (tmp_path / "h").exists()


# -- the messages themselves, without a server ----------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"FANOUT_MAX_CONNECTIONS": "abc"},
            "FANOUT_MAX_CONNECTIONS='abc': expected a whole number",
        ),
        ({"FANOUT_GC_FREEZE": "maybe"}, "FANOUT_GC_FREEZE='maybe': expected true/false"),
        (
            {"FANOUT_OUTBOX_MAX_BYTES": "0"},
            "FANOUT_OUTBOX_MAX_BYTES='0': expected a whole number > 0",
        ),
        ({"FANOUT_LOG_LEVEL": "loud"}, "FANOUT_LOG_LEVEL='loud': expected one of critical"),
        ({"FANOUT_LOG_FORMAT": "xml"}, "FANOUT_LOG_FORMAT='xml': expected text or json"),
        (
            {"FANOUT_HEARTBEAT_INTERVAL": "2", "FANOUT_HEARTBEAT_EXPIRY": "1"},
            "FANOUT_HEARTBEAT_EXPIRY='1': expected seconds > FANOUT_HEARTBEAT_INTERVAL (2.0)",
        ),
        (
            {"FANOUT_BACKEND": "nats://user:hunter2@host"},
            "FANOUT_BACKEND='nats://user:***@host': unknown scheme 'nats'; expected memory://",
        ),
        ({"FANOUT_LOCAL_DIR": "/tmp/" + "d" * 90}, "expected a path of at most 75 bytes"),
    ],
)
def test_each_message_names_the_variable_the_value_and_what_is_allowed(
    env: dict[str, str], expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_log_level_is_checked_case_insensitively_and_may_be_empty() -> None:
    assert Settings.from_env({"FANOUT_LOG_LEVEL": "WARNING"}).log_level_name == "WARNING"
    assert Settings.from_env({}).log_level_name is None  # follow uvicorn


def test_local_dir_is_checked_only_for_the_local_backend(tmp_path: Path) -> None:
    bad = _under_a_file(tmp_path)
    with pytest.raises(SettingsError, match="FANOUT_LOCAL_DIR"):
        Settings.from_env({"FANOUT_LOCAL_DIR": bad})
    Settings.from_env({"FANOUT_LOCAL_DIR": bad, "FANOUT_BACKEND": "memory://"})
    # A folder that does not exist yet is fine where it can be created.
    Settings.from_env({"FANOUT_LOCAL_DIR": str(tmp_path / "new" / "folder")})


def test_a_local_dir_that_cannot_be_written_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root may write anywhere, so the permission check itself is what is replaced here.
    monkeypatch.setattr("app.config.os.access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FANOUT_LOCAL_DIR": str(tmp_path / "sockets")})
    assert str(caught.value).startswith(f"FANOUT_LOCAL_DIR='{tmp_path / 'sockets'}': ")
    assert "not writable" in str(caught.value)


def test_a_history_file_must_be_a_file_path_where_it_is_used(tmp_path: Path) -> None:
    under_a_file = _under_a_file(tmp_path)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FANOUT_HISTORY_FILE": under_a_file})
    assert str(caught.value) == (
        f"FANOUT_HISTORY_FILE={under_a_file!r}: expected a file path, but"
        f" {tmp_path / 'a-file'} is not a directory"
    )
    with pytest.raises(SettingsError, match="FANOUT_HISTORY_FILE"):
        Settings.from_env({"FANOUT_HISTORY_FILE": str(tmp_path), "FANOUT_BACKEND": "memory://"})
    # Not created yet, folders included: made on first use.
    Settings.from_env({"FANOUT_HISTORY_FILE": str(tmp_path / "new" / "history.sqlite3")})
    # Unused with Redis (a warning at start-up instead), so not checked.
    Settings.from_env({"FANOUT_HISTORY_FILE": str(tmp_path), "FANOUT_BACKEND": "redis://h:1/0"})


def test_unknown_variables_get_the_closest_known_name_or_a_pointer() -> None:
    warnings = unknown_variables(
        {
            "FANOUT_MAX_CONECTIONS": "5",
            "FANOUT_NONSENSE_XYZ": "1",
            "FANOUT_BACKEND": "local://",
            "FANOUT_CHROMIUM": "/usr/bin/chromium",  # the browser test's, not a setting
            "PATH": "/bin",
        }
    )
    assert warnings == [
        "FANOUT_MAX_CONECTIONS is not a Fanout setting and is ignored;"
        " did you mean FANOUT_MAX_CONNECTIONS?",
        "FANOUT_NONSENSE_XYZ is not a Fanout setting and is ignored;"
        " the settings are listed in README.md",
    ]
