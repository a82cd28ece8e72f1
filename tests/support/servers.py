"""Real servers for real clients: uvicorn (or hypercorn) subprocesses on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import httpx

ROOT = Path(__file__).resolve().parents[2]
"""The repository: servers run from here, as a user runs them."""
OUTPUT = ROOT / "test-output"
"""Where the servers' logs (and other artefacts of a test run) are written."""


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
        """The write path this server is expected to use: "direct" or "asgi"."""

    @property
    def base(self) -> str:
        """The server's HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str) -> str:
        """The WebSocket URL of ``path`` on this server."""
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start the server and wait until /healthz answers; returns self."""
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
        """/stats, blocking (see :func:`tests.support.stats.fetch_stats` in async tests)."""
        response = httpx.get(f"{self.base}/stats", timeout=5.0)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
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


class ServerKind(NamedTuple):
    """How to run one kind of server, and the write path Fanout takes on it."""

    program: str
    args: list[str]
    write_path: str


SERVERS: dict[str, ServerKind] = {
    # uvicorn's default protocol (websockets-sansio): prepared frames to the transport
    "uvicorn": ServerKind("uvicorn", [], "direct"),
    # other protocols and servers: the plain ASGI fallback
    "uvicorn-wsproto": ServerKind("uvicorn", ["--ws", "wsproto"], "asgi"),
    "hypercorn": ServerKind("hypercorn", [], "asgi"),
}
"""The servers every test that takes the ``server`` fixture runs on, by test id."""


class StartServer(Protocol):
    """The ``start_server`` fixture: start a server with custom settings."""

    def __call__(
        self, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> ServerProcess:
        """Start ``uvicorn app.main:app`` with extra ``env`` and command-line ``args``."""
        ...
