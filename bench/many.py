"""``python -m bench many``: many idle WebSocket connections across uvicorn workers.

It starts the server as a user runs it, ``uvicorn app.main:app --workers N`` (under
``prlimit --nofile=L:L`` when ``--nofile L`` is given, which is what an operator's ``ulimit
-n L`` in the starting shell does), then:

1. opens the connections in steps (``--steps``, default quarters of ``--connections``) from
   several client processes, each binding source addresses of their own (127.0.14.x: about
   28,000 ephemeral ports each), and reports connects/s, the handshake times, and the RSS
   and open descriptors of every server worker at each step (from ``/proc``);
2. pings every connection and counts the pongs;
3. publishes one message with ``POST /api/publish`` (``X-API-Key``) on the raw sockets'
   channel and counts the connections that received it (every worker's, over ``local://``);
4. closes every connection and waits until the workers hold none.

Every step has a deadline and the whole run a time limit; a step that fails for more than
5 % of its connections ends the ramp, and the result says what stopped it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import scenarios, servers
from bench.http_load import API_KEY, publish_body
from bench.scenarios import PER_PROC_MAX, Fleet, Target

Result = dict[str, Any]
CHANNEL = "default"
"""The channel of ``/ws/broadcast``, where the connections wait."""
PATH = "/ws/broadcast"
PER_SOURCE = 16_000
"""Connections per source address: well inside the 28,232 ephemeral ports of each, which
leaves room for the ports still in TIME_WAIT after an earlier run."""
FAILED_SHARE = 0.05
"""A step that fails for more than this share of its connections ends the ramp."""


@dataclass
class ManyConfig:
    """One run's bounds and settings (the command-line options)."""

    connections: int = 100_000
    workers: int = 4
    steps: list[int] = field(default_factory=list)
    """Cumulative connection counts to report at (default: quarters of ``connections``)."""
    nofile: int | None = None
    """Open-file limit (soft and hard) the server starts with; None: inherit this shell's."""
    concurrency: int = 200
    """Handshakes in flight per client process."""
    time_limit: float = 900.0
    """Seconds for the whole run, ramp and checks included."""
    check_timeout: float = 60.0
    """Seconds to wait for every pong, and again for every broadcast."""
    bind_no_port: bool = True
    """Clients bind their source address with IP_BIND_ADDRESS_NO_PORT
    (``bench.client.bound_socket``); False: plain ``bind((ip, 0))``, to compare."""

    def plan(self) -> list[int]:
        """The cumulative counts to stop at, ascending, ending at ``connections``."""
        steps = self.steps or [self.connections * k // 4 for k in range(1, 5)]
        return sorted({min(s, self.connections) for s in steps if s > 0} | {self.connections})


def server_spec(cfg: ManyConfig) -> servers.ServerSpec:
    """``uvicorn app.main:app --workers N``, with ``prlimit`` in front when ``nofile`` is set."""

    def argv(port: int) -> list[str]:
        cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", servers.HOST]
        cmd += ["--port", str(port), "--workers", str(cfg.workers)]
        cmd += ["--no-access-log", "--log-level", "warning", "--backlog", "4096"]
        if cfg.nofile is not None:
            cmd = ["prlimit", f"--nofile={cfg.nofile}:{cfg.nofile}", "--", *cmd]
        return cmd

    env = {
        # The default (10,000 per worker) would refuse most of them with 503.
        "FANOUT_MAX_CONNECTIONS": str(cfg.connections),
        "FANOUT_STATS_LOG_INTERVAL": "0",
        "FANOUT_LOG_LEVEL": "warning",
        "FANOUT_API_KEYS": API_KEY,
    }
    return servers.ServerSpec(
        f"fanout-many-w{cfg.workers}",
        argv,
        env,
        workers=cfg.workers,
        description=f"Fanout, {cfg.workers} uvicorn workers, local://",
        broker=True,
    )


def sources(connections: int) -> list[str]:
    """Loopback source addresses of this mode's own (127.0.14.x), so that ports other
    scenarios left in TIME_WAIT on 127.0.0.x are not in the way."""
    return [f"127.0.14.{1 + i}" for i in range(max(2, math.ceil(connections / PER_SOURCE)))]


@dataclass
class WorkerFigures:
    """One server process as ``/proc`` shows it."""

    pid: int
    rss_kb: int
    fds: int


def server_processes(root: int) -> list[WorkerFigures]:
    """The uvicorn supervisor (first) and its workers: RSS and open descriptors of each."""
    out = []
    for pid in servers.process_tree(root):
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        out.append(WorkerFigures(pid, rss_kb(pid), fds))
    return out


def rss_kb(pid: int) -> int:
    """One process's resident set size in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _clients_cpu(fleet: Fleet) -> float:
    """CPU seconds of the client processes so far."""
    return sum(servers.cpu_seconds(p.pid) for p in fleet.procs if p.pid is not None)


def publish_once(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, str]:
    """``POST /api/publish`` one message to :data:`CHANNEL`; the status and the body."""
    conn = http.client.HTTPConnection(servers.HOST, port, timeout=timeout)
    try:
        body = publish_body(CHANNEL, data)
        headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
        conn.request("POST", "/api/publish", body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")[:200]
    except (OSError, http.client.HTTPException) as exc:
        # A worker at its open-file limit cannot accept the request: say so, go on.
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def _sum_replies(replies: list[Result], key: str) -> int:
    return sum(int(r[key]) for r in replies)


def run(
    cfg: ManyConfig,
    port: int,
    server_root: int,
    on_step: Callable[[Result], None] | None = None,
) -> Result:
    """Ramp, ping, broadcast and close against the server at ``port`` whose supervisor is
    ``server_root``; returns the figures (see the module docstring)."""
    t_run = time.monotonic()
    deadline = t_run + cfg.time_limit
    procs = max(1, math.ceil(cfg.connections / PER_PROC_MAX))
    addrs = sources(cfg.connections)
    target = Target(port=port, name=f"fanout-w{cfg.workers}")
    steps: list[Result] = []
    stopped = ""
    base = server_processes(server_root)
    with Fleet(target, procs) as fleet:
        have = 0
        for goal in cfg.plan():
            left = deadline - time.monotonic()
            if left < 30:
                stopped = f"time limit ({cfg.time_limit:g} s) before {goal} connections"
                break
            want = goal - have
            cpu0 = servers.cpu_seconds(server_root), _clients_cpu(fleet)
            conn = fleet.connect_subs(
                want,
                concurrency=cfg.concurrency,
                path=PATH,
                timeout=15.0,
                sources=addrs,
                bind_no_port=cfg.bind_no_port,
            )
            have += conn["ok"]
            rate = round(conn["ok"] / conn["elapsed"], 1) if conn["elapsed"] else None
            wall = max(conn["elapsed"], 1e-3)
            cpu = servers.cpu_seconds(server_root) - cpu0[0], _clients_cpu(fleet) - cpu0[1]
            procs_now = server_processes(server_root)
            step = {
                "connections": have,
                "wanted": goal,
                "failed": conn["failed"],
                "errors": conn["errors"],
                "elapsed_s": round(conn["elapsed"], 3),
                "connects_per_s": rate,
                "handshake_p50_ms": conn["handshake_p50_ms"],
                "handshake_max_ms": conn["handshake_max_ms"],
                "workers_rss_kb": sum(p.rss_kb for p in procs_now[1:]),
                "server_rss_kb": sum(p.rss_kb for p in procs_now),
                "worker_fds": [p.fds for p in procs_now[1:]],
                # Cores busy during the step (2 here): who was short of CPU, if anyone.
                "server_cpu_util": round(cpu[0] / wall, 2),
                "clients_cpu_util": round(cpu[1] / wall, 2),
                "loadavg_1m": os.getloadavg()[0],
            }
            steps.append(step)
            if on_step is not None:
                on_step(step)
            if conn["failed"] > want * FAILED_SHARE:
                stopped = f"{conn['failed']} of {want} connections failed: {conn['errors']}"
                break
        status = fleet.all_subs({"op": "status"}, 30)
        open_now = _sum_replies(status, "open")
        timeout = cfg.check_timeout
        t = time.monotonic()
        pings = fleet.all_subs({"op": "ping", "timeout": timeout}, timeout + 30)
        ping = {
            "open": _sum_replies(pings, "open"),
            "answered": _sum_replies(pings, "alive"),
            "seconds": round(time.monotonic() - t, 3),
        }
        fleet.all_subs({"op": "mark"}, 30)
        t = time.monotonic()
        code, reply = publish_once(port, json.dumps({"bench": "many"}).encode())
        got = fleet.all_subs({"op": "alive", "timeout": timeout}, timeout + 30)
        broadcast = {
            "status": code,
            "reply": reply,
            "open": _sum_replies(got, "open"),
            "received": _sum_replies(got, "alive"),
            "seconds": round(time.monotonic() - t, 3),
        }
        t_close = time.monotonic()
    # Every client process closed its connections; wait (bounded) for the workers to let go.
    floor = sum(p.fds for p in base[1:])
    close_deadline = time.monotonic() + 60
    held = sum(p.fds for p in server_processes(server_root)[1:])
    while held > floor + 16 * cfg.workers and time.monotonic() < close_deadline:
        time.sleep(0.25)
        held = sum(p.fds for p in server_processes(server_root)[1:])
    return {
        "scenario": "many",
        "server": target.name,
        "params": {**asdict(cfg), "client_procs": procs, "sources": addrs},
        "limits": limits_seen(server_root),
        "workers_rss_kb_before_ramp": sum(p.rss_kb for p in base[1:]),
        "steps": steps,
        "stopped": stopped,
        "opened": have,
        "open_at_end": open_now,
        "ping": ping,
        "broadcast": broadcast,
        "close": {
            "seconds": round(time.monotonic() - t_close, 3),
            "worker_fds_after": held,
            "worker_fds_before_ramp": floor,
        },
        "elapsed_s": round(time.monotonic() - t_run, 1),
    }


def limits_seen(root: int) -> Result:
    """The limits the run met: each server process's open-file limit and the sysctls."""

    def read(path: str) -> str:
        try:
            with open(path) as f:
                return " ".join(f.read().split())
        except OSError:
            return "?"

    nofile = []
    for pid in servers.process_tree(root):
        for line in read(f"/proc/{pid}/limits").split("Max "):
            if line.startswith("open files"):
                nofile.append(" ".join(line.split()[2:4]))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "server_nofile_soft_hard": nofile,
        "bench_nofile": f"{soft} {hard}",
        "fs.nr_open": read("/proc/sys/fs/nr_open"),
        "fs.file-max": read("/proc/sys/fs/file-max"),
        "net.core.somaxconn": read("/proc/sys/net/core/somaxconn"),
        "net.ipv4.tcp_max_syn_backlog": read("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        "net.ipv4.ip_local_port_range": read("/proc/sys/net/ipv4/ip_local_port_range"),
    }


def summary(r: Result) -> str:
    """The human lines of a result."""
    lines = [f"[many] {r['server']}: {r['opened']:,} opened, {r['open_at_end']:,} open at end"]
    for s in r["steps"]:
        lines.append(
            f"  {s['connections']:>7,}: {s['connects_per_s'] or 0:>7,.0f} connects/s, workers "
            f"RSS {s['workers_rss_kb'] / 1024:,.0f} MiB, fds per worker {s['worker_fds']}, "
            f"failed {s['failed']} {s['errors'] or ''}; CPU server {s['server_cpu_util']} "
            f"clients {s['clients_cpu_util']}, load {s['loadavg_1m']:.1f}"
        )
    p, b = r["ping"], r["broadcast"]
    lines.append(f"  ping: {p['answered']:,}/{p['open']:,} answered in {p['seconds']} s")
    lines.append(
        f"  broadcast (HTTP {b['status']}): {b['received']:,}/{b['open']:,} received "
        f"in {b['seconds']} s"
    )
    c = r["close"]
    lines.append(f"  close: workers hold {c['worker_fds_after']} fds after {c['seconds']} s")
    if r["stopped"]:
        lines.append(f"  stopped: {r['stopped']}")
    return "\n".join(lines)


def raise_hard_limit(nofile: int) -> None:
    """Raise this process's open-file limit to ``nofile`` (soft and hard) before anything
    starts, or exit saying why: raising the hard limit needs CAP_SYS_RESOURCE, which root
    in a container may not have (``prlimit`` would fail the same way for the server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if nofile <= hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    except (ValueError, OSError) as exc:
        raise SystemExit(
            f"cannot raise the open-file limit from {soft}/{hard} to {nofile} here ({exc}):"
            f" raising a hard limit needs CAP_SYS_RESOURCE. Run without --nofile and with"
            f" enough --workers for {hard} descriptors each, or raise it where the server"
            f" starts (docs/operations.md)."
        ) from None


def add_parser(sub: Any) -> None:
    """The ``many`` subcommand's options."""
    p = sub.add_parser("many", help="100,000 idle connections across uvicorn workers")
    p.add_argument("--connections", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--steps", type=int, nargs="+", default=[], help="counts to report at")
    p.add_argument(
        "--nofile",
        type=int,
        help="start the server under prlimit --nofile=N:N (as `ulimit -n N` would; root)",
    )
    p.add_argument("--concurrency", type=int, default=200, help="handshakes in flight per process")
    p.add_argument("--time-limit", type=float, default=900.0)
    p.add_argument("--check-timeout", type=float, default=60.0)
    p.add_argument(
        "--plain-bind",
        action="store_true",
        help="clients bind((ip, 0)) without IP_BIND_ADDRESS_NO_PORT (slow past ~50k)",
    )
    p.add_argument("--save", action="store_true", help="write bench/results/extra-many-*.json")


def main(args: argparse.Namespace) -> None:
    """Start the server, run, stop it; print the JSON line and the summary."""
    cfg = ManyConfig(
        connections=args.connections,
        workers=args.workers,
        steps=list(args.steps),
        nofile=args.nofile,
        concurrency=args.concurrency,
        time_limit=args.time_limit,
        check_timeout=args.check_timeout,
        bind_no_port=not args.plain_bind,
    )
    if cfg.nofile is not None:
        raise_hard_limit(cfg.nofile)
    spec = server_spec(cfg)
    with servers.running(spec) as srv:

        def show(step: Result) -> None:
            scenarios.progress(
                f"  many: {step['connections']:,} open, {step['connects_per_s']} connects/s"
            )

        r = run(cfg, srv.port, srv.pid, show)
        r["server_alive_after"] = srv.alive()
    scenarios.progress_done()
    r["command"] = "python -m bench " + " ".join(sys.argv[1:])
    print(json.dumps(r))
    print(summary(r), file=sys.stderr)
    if args.save:
        servers.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = servers.RESULTS_DIR / f"extra-many-{r['server']}.json"
        with contextlib.suppress(OSError):
            out.write_text(json.dumps(r, indent=1))
