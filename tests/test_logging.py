"""Quiet, attributable logs: one line in and one out per client, the worker named, JSON on request.

Real uvicorn servers, real WebSocket clients; the server's own output is what is checked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys

import httpx
import pytest
from websockets.sync.client import connect

from app.logging_setup import JsonFormatter, TextFormatter
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_for

UVICORN_CONNECTION_LINES = ('" [accepted]', "connection open", "connection closed")
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) +"
    r"(?P<logger>[\w.]+)\[(?P<pid>\d+)\]: "
)
SUPERVISOR_LINE = re.compile(r"^(?:INFO|WARNING|ERROR): +")
"""uvicorn's --workers supervisor formats its own few lines; no Fanout code runs there."""
JSON_KEYS = {"time", "level", "logger", "pid", "message"}


def _env(**fanout: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    return {**env, "FANOUT_STATS_LOG_INTERVAL": "0", **fanout}


def _one_client(server: ServerProcess, path: str = "/ws/broadcast") -> None:
    """Connect, send one message, get it back, leave."""
    with connect(server.ws(path), open_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"


def _fanout_lines(log: str, word: str) -> list[str]:
    return [line for line in log.splitlines() if "fanout" in line and f": {word} " in line]


@pytest.mark.parametrize("ws", ["default", "wsproto", "websockets"])
def test_one_client_is_one_line_in_and_one_line_out(ws: str) -> None:
    args = [] if ws == "default" else ["--ws", ws]
    server = ServerProcess(_env(), args).start()
    try:
        _one_client(server)
        assert wait_for(lambda: len(_fanout_lines(server.log(), "disconnect")) == 1), server.log()
        log = server.log()
        assert len(_fanout_lines(log, "connect")) == 1, log
        assert len(_fanout_lines(log, "disconnect")) == 1, log
        for uvicorn_line in UVICORN_CONNECTION_LINES:
            assert uvicorn_line not in log, log
    finally:
        server.stop()


def test_uvicorn_log_level_warning_silences_fanout_info_lines() -> None:
    server = ServerProcess(_env(), ["--log-level", "warning"]).start()
    try:
        _one_client(server)
        _one_client(server, "/ws/echo")
        httpx.get(f"{server.base}/stats", timeout=5).raise_for_status()
    finally:
        server.stop()
    log = server.log()
    assert "INFO" not in log, log


def test_fanout_log_level_overrides_uvicorns() -> None:
    server = ServerProcess(_env(FANOUT_LOG_LEVEL="info"), ["--log-level", "warning"]).start()
    try:
        _one_client(server)
        assert wait_for(lambda: len(_fanout_lines(server.log(), "disconnect")) == 1), server.log()
    finally:
        server.stop()
    log = server.log()
    assert len(_fanout_lines(log, "connect")) == 1, log
    assert "uvicorn[" not in log, log  # uvicorn itself still at warning


def test_every_worker_line_names_its_worker() -> None:
    server = ServerProcess(_env(), ["--workers", "2"]).start()
    try:
        started = "Application startup complete"
        assert wait_for(lambda: server.log().count(started) == 2), server.log()
        for _ in range(4):
            _one_client(server)
        httpx.get(f"{server.base}/stats", timeout=5).raise_for_status()
        assert wait_for(lambda: len(_fanout_lines(server.log(), "disconnect")) == 4)
    finally:
        server.stop()
    assert server.proc is not None
    supervisor = server.proc.pid
    pids = set()
    for line in server.log().splitlines():
        if SUPERVISOR_LINE.match(line):
            continue
        match = TEXT_LINE.match(line)
        assert match is not None, f"a line without its worker: {line!r}"
        pids.add(int(match["pid"]))
    assert len(pids) == 2, pids  # two workers, each line naming the one that wrote it
    assert supervisor not in pids


def test_json_lines_parse_with_stable_keys_for_fanout_and_uvicorn() -> None:
    server = ServerProcess(_env(FANOUT_LOG_FORMAT="json")).start()
    try:
        _one_client(server)
        httpx.get(f"{server.base}/stats", timeout=5)
        assert wait_for(lambda: '"disconnect ' in server.log()), server.log()
    finally:
        server.stop()
    assert server.proc is not None
    entries = [json.loads(line) for line in server.log().splitlines()]
    for entry in entries:
        assert set(entry) == JSON_KEYS, entry
        assert entry["pid"] == server.proc.pid
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    loggers = {entry["logger"] for entry in entries}
    assert {"fanout", "uvicorn.error", "uvicorn.access"} <= loggers, loggers
    fanout = [e["message"].split()[0] for e in entries if e["logger"] == "fanout"]
    # SIGTERM drains (nothing left here) before uvicorn shuts down: one line each way.
    assert fanout == ["connect", "disconnect", "draining", "drained"], entries


# -- the formatters, in process ----------------------------------------------------------------


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("fanout", logging.ERROR, __file__, 1, message, args, exc_info)


def test_json_lines_carry_the_traceback_under_exc() -> None:
    line = JsonFormatter().format(_record("failed %s", "here", exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == {*JSON_KEYS, "exc"}
    assert entry["message"] == "failed here"
    assert entry["exc"].startswith("Traceback") and "RuntimeError: boom" in entry["exc"]
    assert entry["pid"] == os.getpid()


def test_a_text_record_is_one_line_whatever_the_message_holds() -> None:
    line = TextFormatter().format(_record("rejected %s", "/ws/x\nFAKE 2026 INFO forged"))
    assert "\n" not in line
    assert line.endswith(f"ERROR   fanout[{os.getpid()}]: rejected /ws/x\\nFAKE 2026 INFO forged")
