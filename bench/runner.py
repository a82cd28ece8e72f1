"""Side-by-side runs: the same scenarios against Fanout and reference servers,
alternating servers, repeated, saved as one JSON file for ``python -m bench report``."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import scenarios, servers
from bench.client import raise_fd_limit
from bench.http_load import API_KEY
from bench.summary import summarize

RESULTS = servers.REPO / "bench" / "results"
DEFAULT_SERVERS = ["fanout", "fanout-wN", "node-ws", "websockets", "naive-starlette"]


@dataclass
class Item:
    key: str
    scenario: str
    run: Callable[[scenarios.Target], dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    broker_only: bool = False
    """Needs fanout.v1 or the HTTP API: run only on servers that have them."""
    needs: frozenset[str] = frozenset()
    """Server features (``ServerSpec.features``: auth, history) the item needs."""
    avoid: frozenset[str] = frozenset()
    """Features of servers the item is not run on (they exist for other items)."""

    def applies(self, spec: servers.ServerSpec) -> bool:
        if self.broker_only and not spec.broker:
            return False
        return self.needs <= spec.features and not (self.avoid & spec.features)


def plan(quick: bool, subscribers: list[int]) -> list[Item]:
    d = 2.0 if quick else 3.0

    def fan(n: int) -> Callable[[scenarios.Target], dict[str, Any]]:
        return lambda t: scenarios.fanout(t, subscribers=n, duration=d, warmup=1.0)

    def fan_v1(n: int) -> Callable[[scenarios.Target], dict[str, Any]]:
        return lambda t: scenarios.fanout(
            dataclasses.replace(t, protocol="v1"), subscribers=n, duration=d, warmup=1.0, path="/ws"
        )

    def api(endpoint: str) -> Callable[[scenarios.Target], dict[str, Any]]:
        return lambda t: scenarios.api(t, endpoint=endpoint, duration=d, warmup=1.0)

    def fan_hist(n: int) -> Callable[[scenarios.Target], dict[str, Any]]:
        return lambda t: scenarios.fanout(
            dataclasses.replace(t, protocol="v1", channel=servers.HIST_CHANNEL),
            subscribers=n,
            duration=d,
            warmup=1.0,
            path="/ws",
        )

    def connect(n: int, token: str) -> Callable[[scenarios.Target], dict[str, Any]]:
        return lambda t: scenarios.connect_rate(t, connections=n, token=token)

    def latency_v1(channel: str) -> Callable[[scenarios.Target], dict[str, Any]]:
        return lambda t: scenarios.latency(
            dataclasses.replace(t, protocol="v1", channel=channel),
            subscribers=1000,
            rates=rates,
            duration=d,
            warmup=0.5,
            path="/ws",
        )

    hist = frozenset({"history"})
    auth = frozenset({"auth"})
    rates = [20.0, 50.0, 100.0]
    items = []
    for n in subscribers:
        params = {"subscribers": n, "duration": d}
        items.append(Item(f"fanout-{n}", "fanout", fan(n), params, avoid=hist))
        v1_params = {"subscribers": n, "duration": d, "protocol": "fanout.v1", "data": "64 B JSON"}
        items.append(
            Item(f"fanout-v1-{n}", "fanout", fan_v1(n), v1_params, broker_only=True, avoid=hist)
        )
        hist_params = {**v1_params, "channel": servers.HIST_CHANNEL}
        items.append(Item(f"fanout-hist-{n}", "fanout", fan_hist(n), hist_params, needs=hist))
    # Issue 10: connects/s with `?token=` (HS256) against the same server without one.
    conns = 5000
    for token in scenarios.TOKEN_MODES:
        key = f"connect-{conns}" if token == "none" else f"connect-token-{token}-{conns}"
        items.append(
            Item(
                key,
                "connect",
                connect(conns, token),
                {"connections": conns, "concurrency": 200, "token": token},
                needs=frozenset() if token == "none" else auth,
                avoid=hist,
            )
        )
    # Issue 11: latency with and without history (fanout.v1 both, on the same server), and
    # the recovery of 1,000 clients 100 messages behind.
    for key, channel in (("latency-v1", "news"), ("latency-hist", servers.HIST_CHANNEL)):
        lat_params = {"subscribers": 1000, "rates": rates, "duration": d, "channel": channel}
        items.append(Item(key, "latency", latency_v1(channel), lat_params, needs=hist))
    items.append(
        Item(
            "recovery-1000",
            "recovery",
            lambda t: scenarios.recovery(t, clients=1000, behind=100),
            {"clients": 1000, "behind": 100, "channel": servers.HIST_CHANNEL},
            needs=hist,
        )
    )
    for endpoint in scenarios.API_ENDPOINTS:
        api_params = {"endpoint": endpoint, "connections": 32, "subscribers": 2, "duration": d}
        items.append(Item(f"api-{endpoint}", "api", api(endpoint), api_params, broker_only=True))
    items.append(
        Item(
            "latency",
            "latency",
            lambda t: scenarios.latency(t, subscribers=1000, rates=rates, duration=d, warmup=0.5),
            {"subscribers": 1000, "rates": rates, "duration": d},
        )
    )
    steps = [1000, 5000, 10000]
    items.append(
        Item(
            "memory",
            "memory",
            lambda t: scenarios.memory(t, steps=steps, settle=1.0 if quick else 2.0),
            {"steps": steps, "settle": 1.0 if quick else 2.0},
        )
    )
    items.append(
        Item(
            "churn",
            "churn",
            lambda t: scenarios.churn(t, subscribers=1000, churners=50, rate=50.0, duration=d),
            {"subscribers": 1000, "churners": 50, "hold": 0.2, "rate": 50.0, "duration": d},
        )
    )
    items.append(
        Item(
            "slow",
            "slow",
            lambda t: scenarios.slow_consumer(t, subscribers=1000, slow_share=0.1, duration=d),
            {"subscribers": 1000, "slow_share": 0.1, "rate": 50.0, "size": 1024, "duration": d},
        )
    )
    return items


def machine_busy(window: float = 0.5) -> float:
    """Share of all cores busy over a short window (other people's load, between runs)."""
    a = servers.cpu_times()
    time.sleep(window)
    b = servers.cpu_times()
    busy = sum(x[0] for x in b) - sum(x[0] for x in a)
    total = sum(x[1] for x in b) - sum(x[1] for x in a)
    return busy / total if total else 0.0


def wait_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (at most ``limit_s``) until the machine is idle; return the last busy share."""
    deadline = time.monotonic() + limit_s
    busy = machine_busy()
    while busy > threshold and time.monotonic() < deadline:
        busy = machine_busy(1.0)
    return busy


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions: dict[str, str] = {"python": platform.python_version()}
    for mod in ("uvicorn", "starlette", "websockets", "uvloop", "httptools"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = "?"
    versions["node"] = _version(["node", "--version"])
    ws_pkg = servers.NODE_DIR / "node_modules" / "ws" / "package.json"
    if ws_pkg.exists():
        versions["ws (npm)"] = json.loads(ws_pkg.read_text()).get("version", "?")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "os": _version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "fd_limit": raise_fd_limit(),
        "versions": versions,
        "commit": _version(["git", "-C", str(servers.REPO), "rev-parse", "--short", "HEAD"]),
        "server_dir": str(servers.APP_DIR),
        "server_commit": os.environ.get("BENCH_FANOUT_COMMIT", ""),
    }


def main(args: argparse.Namespace) -> None:
    specs = servers.server_specs(args.workers)
    names = [s.replace("-wN", f"-w{args.workers}") for s in (args.servers or DEFAULT_SERVERS)]
    for n in names:
        if n not in specs:
            raise SystemExit(f"unknown server {n!r}; choose from {', '.join(specs)}")
    items = plan(args.quick, args.subscribers or [100, 1000, 5000, 10000])
    if args.only:
        items = [i for i in items if i.key in args.only]
    runs: list[dict[str, Any]] = []
    todo = [
        (
            item,
            rep,
            [
                n
                for n in names[(i + rep) % len(names) :] + names[: (i + rep) % len(names)]
                if item.applies(specs[n])
            ],
        )
        for rep in range(args.repeats)
        for i, item in enumerate(items)
    ]
    total = sum(len(order) for _, _, order in todo)
    out = Path(args.out) if args.out else RESULTS / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "servers": {n: specs[n].description for n in names},
        "plan": [{"key": i.key, "scenario": i.scenario, "params": i.params} for i in items],
        "repeats": args.repeats,
        "pinning": "one-worker servers on core 0, client processes on core 1 (taskset)",
        "runs": runs,
    }
    done = 0
    t_start = time.monotonic()
    for item, rep, order in todo:
        for name in order:
            spec = specs[name]
            done += 1
            elapsed = time.monotonic() - t_start
            print(
                f"[{done}/{total} {elapsed:5.0f}s] {item.key} on {name} (repeat {rep + 1})",
                file=sys.stderr,
                flush=True,
            )
            pin = spec.workers == 1 and (os.cpu_count() or 1) >= 2
            entry: dict[str, Any] = {"key": item.key, "server": name, "repeat": rep}
            t_run = time.monotonic()
            entry["loadavg_before"] = os.getloadavg()[0]
            if args.wait_quiet > 0:
                entry["busy_before"] = round(wait_quiet(args.wait_quiet), 3)
                if entry["busy_before"] > 0.15:
                    print(
                        f"   warning: machine {entry['busy_before']:.0%} busy before this run",
                        file=sys.stderr,
                    )
            try:
                with servers.running(spec, cpus=[0] if pin else None) as srv:
                    target = scenarios.Target(
                        port=srv.port,
                        name=name,
                        rss_kb=srv.rss_kb,
                        cpu_seconds=srv.cpu_seconds,
                        client_cpus=[1] if pin else None,
                        api_key=API_KEY,
                    )
                    result = item.run(target)
                    entry["server_alive_after"] = srv.alive()
                entry["result"] = result
                print("   " + summarize(result), file=sys.stderr, flush=True)
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                print(f"   FAILED: {entry['error']}", file=sys.stderr, flush=True)
                traceback.print_exc(limit=3, file=sys.stderr)
            entry["elapsed_s"] = round(time.monotonic() - t_run, 1)
            runs.append(entry)
            out.write_text(json.dumps(doc, indent=1))
    doc["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    doc["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out} ({len(runs)} runs in {doc['elapsed_s']} s)", file=sys.stderr)
    print(json.dumps({"results": str(out), "runs": len(runs), "elapsed_s": doc["elapsed_s"]}))
