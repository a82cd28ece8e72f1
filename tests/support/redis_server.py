"""A throwaway real ``redis-server`` for the Redis backend tests (never a mock).

The ``redis_server`` fixture (in conftest.py) starts Debian's redis-server on a free
loopback port with no persistence and stops it by PID afterwards. Without the binary the
tests are skipped locally and fail on CI (CI=true), where scripts/test.sh installs the package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.servers import OUTPUT, free_port


class RedisServer:
    """One redis-server process that can be killed and restarted on the same port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False
        """Whether it has listened once (a restart keeps the port)."""
        OUTPUT.mkdir(exist_ok=True)
        self.log_path: Path = OUTPUT / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        """The redis:// URL of database 0 on this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start (or restart, on the same port) and wait until it answers PING; returns self.

        A first start whose port was taken meanwhile (free_port() only finds a port free
        at that moment) moves to another port: the PING must come from this process, not
        from another redis-server on the port (another test run's), whose clients would
        then share this test's channels.
        """
        for _ in range(3):
            if self._start(timeout):
                return self
            if self.started:
                break  # a restart keeps its port: the clients reconnect to it
            self.port = free_port()
            self.log_path = OUTPUT / f"redis-{self.port}.log"
        raise RuntimeError(f"redis-server could not listen on port {self.port}")

    def _start(self, timeout: float) -> bool:
        """False when the process exited because another process holds the port."""
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log_path.read_text().lower():
                    return False
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()}")
            if self.pid_answering() == self.proc.pid:
                self.started = True
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server not ready in {timeout}s")

    def ping(self) -> bool:
        """Whether the server answers PING right now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pid_answering(self) -> int | None:
        """The process id of the redis-server answering on the port, None if none answers."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"INFO server\r\n")
                reply = b""
                while (
                    b"process_id:" not in reply or b"\r\n" not in reply.partition(b"process_id:")[2]
                ):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return None
        for line in reply.split(b"\r\n"):
            if line.startswith(b"process_id:"):
                return int(line.partition(b":")[2])
        return None

    def kill(self) -> None:
        """SIGKILL by PID: Redis vanishes as it would in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP by PID: Redis hangs without closing anything (its sockets stay open and
        the kernel still accepts connections and bytes for it), as in a network black hole."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT by PID: a paused Redis carries on with everything that waited for it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGCONT (in case it is paused), then SIGTERM by PID and wait (SIGKILL if it does
        not exit within 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def redis_binary() -> str:
    """The redis-server to use, or skip (locally) / fail (CI) when there is none."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-server is not installed, and CI must run the Redis tests")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return binary
