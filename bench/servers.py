"""Start and stop servers under test, wait for readiness, read their RSS and CPU time."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.http_load import API_KEY

REPO = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
NODE_DIR = PEERS / "node_ws"
RESULTS_DIR = REPO / "bench" / "results"
LOG_DIR = RESULTS_DIR / "logs"
# Servers run from this directory (default: the repository). Point BENCH_FANOUT_DIR at an
# exported commit (`git archive HEAD | tar -x -C DIR`) to benchmark a fixed version.
APP_DIR = Path(os.environ.get("BENCH_FANOUT_DIR", str(REPO)))
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class ServerSpec:
    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    description: str = ""
    prepare: Callable[[], None] | None = None
    cwd: Path | None = None
    """Directory to run from (default APP_DIR): another checkout for a before/after run."""
    broker: bool = False
    """Speaks fanout.v1 on /ws and serves the HTTP API (with the key ``BROKER_ENV`` sets)."""
    features: frozenset[str] = frozenset()
    """What the extra env turns on: ``auth`` (an HS256 token secret), ``history`` (a rules
    file with history on ``hist.*``); plan items that need one run only where it is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _uvicorn(target: str, workers: int = 1) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        cmd = [sys.executable, "-m", "uvicorn", target, "--host", HOST, "--port", str(port)]
        cmd += ["--no-access-log", "--log-level", "warning", "--backlog", "4096"]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        return cmd

    return argv


def ensure_node_ws() -> None:
    """Install the npm ``ws`` package into bench/peers/node_ws on demand (never vendored)."""
    if (NODE_DIR / "node_modules" / "ws").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: install Node.js to benchmark the node-ws peer")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent"],
        cwd=NODE_DIR,
        check=True,
        timeout=300,
    )


# Like the peers, Fanout runs without per-connection log lines while measured.
FANOUT_ENV = {
    "FANOUT_MAX_CONNECTIONS": "100000",
    "FANOUT_STATS_LOG_INTERVAL": "0",
    "FANOUT_LOG_LEVEL": "warning",
}
_ENV_NOTE = " ".join(f"{k}={v}" for k, v in FANOUT_ENV.items())
# Servers with the broker (fanout.v1, HTTP API) also get the key the `api` scenario sends.
BROKER_ENV = {**FANOUT_ENV, "FANOUT_API_KEYS": API_KEY}
# `fanout-auth`: HS256 tokens (`?token=` on the URL) signed with this secret are checked.
TOKEN_SECRET = "bench-token-secret-0123456789abcdef"
AUTH_ENV = {"FANOUT_TOKEN_HMAC_SECRET": TOKEN_SECRET}
# `fanout-hist*`: channels `hist.*` keep history (size 1000, ttl 600 s); others do not.
HIST_CONFIG = Path(__file__).resolve().parent / "configs" / "hist.toml"
HIST_ENV = {"FANOUT_CONFIG": str(HIST_CONFIG)}
HIST_CHANNEL = "hist.bench"
# `fanout-hist-redis-wN` exists when BENCH_REDIS_URL names a Redis the caller started.
REDIS_URL_ENV = "BENCH_REDIS_URL"


def server_specs(workers: int = 2) -> dict[str, ServerSpec]:
    node = shutil.which("node") or "node"
    # BENCH_BASELINE_DIR: an exported older commit, measured as "fanout-before" in the same
    # run as today's code, so a refactor's before/after share one machine state.
    baseline = os.environ.get("BENCH_BASELINE_DIR", "")
    extra = (
        {
            "fanout-before": ServerSpec(
                "fanout-before",
                _uvicorn("app.main:app"),
                dict(FANOUT_ENV),
                description=f"Fanout at {baseline}, 1 uvicorn worker ({_ENV_NOTE})",
                cwd=Path(baseline),
            )
        }
        if baseline
        else {}
    )
    redis_url = os.environ.get(REDIS_URL_ENV, "")
    if redis_url:
        extra[f"fanout-hist-redis-w{workers}"] = ServerSpec(
            f"fanout-hist-redis-w{workers}",
            _uvicorn("app.main:app", workers),
            {**BROKER_ENV, **HIST_ENV, "FANOUT_BACKEND": redis_url},
            workers=workers,
            description=f"Fanout, {workers} uvicorn workers, FANOUT_BACKEND={redis_url},"
            f" FANOUT_CONFIG={HIST_CONFIG.relative_to(REPO)} (history on hist.*)",
            broker=True,
            features=frozenset({"history"}),
        )
    return extra | {
        "fanout-auth": ServerSpec(
            "fanout-auth",
            _uvicorn("app.main:app"),
            {**BROKER_ENV, **AUTH_ENV},
            description="Fanout, 1 uvicorn worker, FANOUT_TOKEN_HMAC_SECRET set (HS256 tokens)",
            broker=True,
            features=frozenset({"auth"}),
        ),
        "fanout-hist": ServerSpec(
            "fanout-hist",
            _uvicorn("app.main:app"),
            {**BROKER_ENV, **HIST_ENV},
            description=f"Fanout, 1 uvicorn worker, local://,"
            f" FANOUT_CONFIG={HIST_CONFIG.relative_to(REPO)} (history on hist.*)",
            broker=True,
            features=frozenset({"history"}),
        ),
        f"fanout-hist-w{workers}": ServerSpec(
            f"fanout-hist-w{workers}",
            _uvicorn("app.main:app", workers),
            {**BROKER_ENV, **HIST_ENV},
            workers=workers,
            description=f"Fanout, {workers} uvicorn workers, local://,"
            f" FANOUT_CONFIG={HIST_CONFIG.relative_to(REPO)} (history on hist.*)",
            broker=True,
            features=frozenset({"history"}),
        ),
        "fanout": ServerSpec(
            "fanout",
            _uvicorn("app.main:app"),
            dict(BROKER_ENV),
            description=f"Fanout, 1 uvicorn worker ({_ENV_NOTE})",
            broker=True,
        ),
        "fanout-asgi": ServerSpec(
            "fanout-asgi",
            _uvicorn("app.main:app"),
            {**BROKER_ENV, "FANOUT_DIRECT_WRITES": "false"},
            description="Fanout, 1 worker, plain ASGI sends (FANOUT_DIRECT_WRITES=false)",
            broker=True,
        ),
        f"fanout-w{workers}": ServerSpec(
            f"fanout-w{workers}",
            _uvicorn("app.main:app", workers),
            dict(BROKER_ENV),
            workers=workers,
            description=f"Fanout, {workers} uvicorn workers ({_ENV_NOTE})",
            broker=True,
        ),
        "node-ws": ServerSpec(
            "node-ws",
            lambda port: [node, str(NODE_DIR / "server.js"), str(port), HOST],
            description="Node.js + npm ws (loop over clients, ws.send)",
            prepare=ensure_node_ws,
        ),
        "websockets": ServerSpec(
            "websockets",
            lambda port: [
                sys.executable,
                "-m",
                "bench.peers.websockets_server",
                "--port",
                str(port),
            ],
            description="Python websockets library, broadcast(), uvloop",
        ),
        "naive-starlette": ServerSpec(
            "naive-starlette",
            _uvicorn("bench.peers.naive_starlette:app"),
            description="Starlette, `for ws in clients: await ws.send_bytes(m)`",
        ),
    }


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    kids = _children()
    out = [pid]
    i = 0
    while i < len(out):
        out.extend(kids.get(out[i], []))
        i += 1
    return out


def rss_kb(pid: int) -> int:
    """Resident set size of a process and all its descendants, in KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree, in seconds."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / CLK_TCK


def cpu_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies of every core, from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out.append((sum(v) - idle, sum(v)))
    return out


def core_util(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[float]:
    """Busy share of each core between two ``cpu_times()`` readings."""
    return [
        round((b1 - b0) / (t1 - t0), 3) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(before, after, strict=False)
    ]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, body


class RunningServer:
    def __init__(self, spec: ServerSpec, port: int, proc: subprocess.Popen[bytes], log: Path):
        self.spec = spec
        self.port = port
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        else:
            # The leader is gone; reap any worker it left in its own process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def start_server(
    spec: ServerSpec,
    cpus: list[int] | None = None,
    port: int | None = None,
    ready_timeout: float = 30.0,
) -> RunningServer:
    """Start a server as its own process group, optionally pinned with taskset, and
    wait until ``GET /healthz`` answers 200."""
    if spec.prepare is not None:
        spec.prepare()
    port = port or free_port()
    argv = spec.argv(port)
    if cpus and shutil.which("taskset"):
        argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{spec.name}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=spec.cwd or APP_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = RunningServer(spec, port, proc, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            status, _ = http_get(port, "/healthz", timeout=1.0)
            if status == 200:
                if spec.workers > 1:
                    time.sleep(1.0)  # let every worker finish starting
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{spec.name} not ready after {ready_timeout}s:\n{server.log_tail()}")


@contextlib.contextmanager
def running(spec: ServerSpec, cpus: list[int] | None = None) -> Iterator[RunningServer]:
    server = start_server(spec, cpus)
    try:
        yield server
    finally:
        server.stop()
