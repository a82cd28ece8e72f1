"""The fixtures; the helpers behind them are in tests/support/."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, redis_binary
from tests.support.servers import SERVERS, ServerProcess, StartServer


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One server with default settings per test module, on each write path and server."""
    kind = SERVERS[request.param]
    proc = ServerProcess(args=kind.args, program=kind.program).start()
    proc.write_path = kind.write_path
    yield proc
    proc.stop()


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start servers with custom settings; each is stopped after the test."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> ServerProcess:
        proc = ServerProcess(env, args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test, stopped afterwards (skipped without the binary)."""
    server = RedisServer(redis_binary()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def local_dir() -> Iterator[Path]:
    """A short private folder for local:// sockets (AF_UNIX paths are short), removed after."""
    path = Path(tempfile.mkdtemp(prefix="fanout-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
