"""Real servers for real clients: uvicorn subprocesses on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(RuntimeError):
    """The chosen port was taken between choosing it and binding it."""


class ServerProcess:
    """``uvicorn app.main:app`` (or hypercorn) in a subprocess, as a user runs it."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        program: str = "uvicorn",
    ) -> None:
        self.port = free_port()
        self.program = program
        self.env = {**os.environ, "FANOUT_STATS_LOG_INTERVAL": "0", **(env or {})}
        self.args = args or []
        OUTPUT.mkdir(exist_ok=True)
        self.log_path = OUTPUT / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_path = "direct"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        # free_port() only finds a port free at that moment; another process may take it
        # before the server binds. Then pick another one instead of failing the test.
        for _ in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                self.port = free_port()
                self.log_path = OUTPUT / f"server-{self.port}.log"
        return self._start(timeout)

    def _start(self, timeout: float) -> ServerProcess:
        if self.program == "hypercorn":
            cmd = [sys.executable, "-m", "hypercorn", "app.main:app"]
            cmd += ["--bind", f"127.0.0.1:{self.port}", *self.args]
        else:
            cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
            cmd += ["--port", str(self.port), *self.args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log().lower():
                    raise PortTaken(self.port)
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1.0).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log()}")

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base}/stats", timeout=5.0)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Signal the server (by PID) and wait for it; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


SERVERS = {
    # uvicorn's default protocol (websockets-sansio): prepared frames to the transport
    "uvicorn": ("uvicorn", [], "direct"),
    # other protocols and servers: the plain ASGI fallback
    "uvicorn-wsproto": ("uvicorn", ["--ws", "wsproto"], "asgi"),
    "hypercorn": ("hypercorn", [], "asgi"),
}


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One server with default settings per test module, on each write path and server."""
    program, args, write_path = SERVERS[request.param]
    proc = ServerProcess(args=args, program=program).start()
    proc.write_path = write_path
    yield proc
    proc.stop()


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with custom settings; each is stopped after the test."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> ServerProcess:
        proc = ServerProcess(env, args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; behaviour, not timing, is tested."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


async def fetch_stats(server: ServerProcess) -> dict[str, Any]:
    """/stats without blocking the test's event loop."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(f"{server.base}/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def eventually(
    predicate: Callable[[], Any], within: float = 10.0, step: float = 0.05
) -> bool:
    """Await ``predicate`` (sync or async) until truthy or ``within`` seconds pass."""
    import asyncio
    import inspect

    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result or time.monotonic() >= deadline:
            return bool(result)
        await asyncio.sleep(step)
