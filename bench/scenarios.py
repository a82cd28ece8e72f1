"""Benchmark scenarios. Each one drives a fleet of client processes against a server
on loopback, is bounded in count and time, and returns a JSON-able dict of figures."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from bench import stats
from bench.client import Cmd, raise_fd_limit, worker_main
from bench.http_load import API_KEY, build_request, publish_body
from bench.protocol import JSON_PAYLOAD_MIN, PAYLOAD_MIN, make_json_data
from bench.servers import HIST_CHANNEL, TOKEN_SECRET, core_util, cpu_times

Result = dict[str, Any]
PER_PROC_MAX = 15_000  # connections per client process (hard fd limit here is 20,000)
PER_SOURCE_MAX = 20_000  # connections per loopback source address (ephemeral port range)


@dataclass
class Target:
    """Where the clients connect, and what can be observed about the server."""

    port: int
    host: str = "127.0.0.1"
    name: str = "server"
    rss_kb: Callable[[], int] | None = None
    cpu_seconds: Callable[[], float] | None = None
    client_cpus: list[int] | None = None
    protocol: str = "raw"
    """How WebSocket clients speak: ``raw`` (the path's channel) or ``v1`` (fanout.v1 on
    ``/ws``: subprotocol, one ``sub`` to ``channel``, publishes as ``pub`` with JSON data)."""
    channel: str = "news"
    api_key: str = API_KEY


def sources_for(n: int) -> list[str]:
    k = max(4, math.ceil(n / PER_SOURCE_MAX) + 1)
    return [f"127.0.0.{2 + i}" for i in range(k)]


def split(n: int, parts: int) -> list[int]:
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def progress(msg: str) -> None:
    """A live status line on stderr (overwritten in place on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K" + msg)
    else:
        sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def progress_done() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()


class Fleet:
    """Client processes; index 0 hosts publishers, the rest host subscribers."""

    def __init__(self, target: Target, procs: int) -> None:
        raise_fd_limit()
        self.target = target
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.stash: dict[int, list[Cmd]] = {}
        self.procs: list[BaseProcess] = []
        for i in range(procs + 1):
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=worker_main,
                args=(child, i, target.host, target.port, target.client_cpus),
                daemon=True,
            )
            p.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(p)
        for pipe in self.pipes:
            if not pipe.poll(30):
                self.close()
                raise RuntimeError("client process did not start")
            pipe.recv()

    @property
    def sub_workers(self) -> list[int]:
        return list(range(1, len(self.pipes)))

    def recv(self, i: int, op: str, deadline: float) -> Cmd:
        """Next reply of process ``i`` to command ``op`` (other replies are kept aside)."""
        stash = self.stash.setdefault(i, [])
        for k, r in enumerate(stash):
            if r["op"] == op:
                return stash.pop(k)
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not self.pipes[i].poll(left):
                raise TimeoutError(f"client process {i} did not answer {op!r}")
            reply: Cmd = self.pipes[i].recv()
            if "error" in reply:
                raise RuntimeError(f"client process {i}: {reply['error']}")
            if reply.get("op") == op:
                return reply
            stash.append(reply)

    def request(self, cmds: dict[int, Cmd], timeout: float) -> dict[int, Cmd]:
        for i, cmd in cmds.items():
            self.pipes[i].send(cmd)
        deadline = time.monotonic() + timeout
        return {i: self.recv(i, cmds[i]["op"], deadline) for i in cmds}

    def all_subs(self, cmd: Cmd, timeout: float) -> list[Cmd]:
        return list(self.request({i: dict(cmd) for i in self.sub_workers}, timeout).values())

    @property
    def speech(self) -> Cmd:
        """The protocol fields of every connect and churn command."""
        return {"proto": self.target.protocol, "channel": self.target.channel}

    def connect_subs(
        self,
        n: int,
        role: str = "sub",
        prefix: int = 0,
        concurrency: int = 200,
        workers: list[int] | None = None,
        **kw: Any,
    ) -> Result:
        workers = self.sub_workers if workers is None else workers
        counts = split(n, len(workers))
        timeout = 30.0 + n / 200.0
        cmds = {
            w: {
                "op": "connect",
                "n": c,
                "role": role,
                "prefix": prefix,
                "concurrency": concurrency,
                "sources": sources_for(n),
                "deadline": timeout - 5,
                **self.speech,
                **kw,
            }
            for w, c in zip(workers, counts, strict=True)
            if c > 0
        }
        replies = list(self.request(cmds, timeout).values())
        errors: dict[str, int] = {}
        for r in replies:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return {
            "ok": sum(r["ok"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "errors": errors,
            "elapsed": max((r["elapsed"] for r in replies), default=0.0),
            "handshake_p50_ms": _median([r["handshake_p50_ms"] for r in replies]),
            "handshake_max_ms": max((r["handshake_max_ms"] or 0.0 for r in replies), default=0.0),
        }

    def connect_pubs(self, n: int, publish: Cmd) -> Result:
        r = self.request(
            {
                0: {
                    "op": "connect",
                    "n": n,
                    "role": "pub",
                    "prefix": PAYLOAD_MIN,
                    "publish": publish,
                    "path": publish.get("path", "/ws/broadcast"),
                    **self.speech,
                }
            },
            30.0,
        )[0]
        if r["ok"] != n:
            raise RuntimeError(f"could not connect publishers: {r['errors']}")
        return r

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send({"op": "close"})
        deadline = time.monotonic() + 10
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()  # our own child, by its PID
                p.join(2)
        for pipe in self.pipes:
            pipe.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return stats.percentile(vals, 50) if vals else None


def measure(
    fleet: Fleet,
    duration: float,
    warmup: float,
    publish: Cmd | None,
    latency: bool = False,
    label: str = "",
) -> Result:
    """One measurement window across all client processes, with server CPU and RSS."""
    target = fleet.target
    now = time.monotonic()
    pub_start = now + 0.3
    t0 = pub_start + warmup
    t1 = t0 + duration
    cmd: Cmd = {"op": "measure", "t0": t0, "t1": t1, "pub_start": pub_start, "latency": latency}
    for i, pipe in enumerate(fleet.pipes):
        c = dict(cmd)
        if i == 0 and publish is not None:
            c["publish"] = publish
        pipe.send(c)
    _wait_until(t0, label, t0, t1)
    cpu0 = target.cpu_seconds() if target.cpu_seconds else None
    cores0 = cpu_times()
    _wait_until(t1, label, t0, t1)
    cpu1 = target.cpu_seconds() if target.cpu_seconds else None
    cores = core_util(cores0, cpu_times())
    rss = target.rss_kb() if target.rss_kb else None
    progress_done()
    deadline = time.monotonic() + 30 + duration
    replies = [fleet.recv(i, "measure", deadline) for i in range(len(fleet.pipes))]
    pub, subs = replies[0], replies[1:]
    lat = stats.merge_samples([r["latencies"] for r in subs])
    lat_app = stats.merge_samples([r["latencies_app"] for r in subs])
    source = "kernel" if lat else "app"
    keyed = all(len(r.get("latency_keys", ())) == len(r["latencies"]) for r in subs)
    first = (
        stats.first_share([r["latencies"] for r in subs], [r["latency_keys"] for r in subs])
        if latency and lat and keyed
        else []
    )
    frames = sum(r["frames"] for r in replies)
    receivers = sum(r["conns"] for r in replies)
    sent = pub["sent"]
    client_cpu = sum(r["cpu_s"] for r in replies)
    out: Result = {
        "duration_s": round(duration, 3),
        "messages_sent": sent,
        "publish_rate": round(sent / duration, 1),
        "deliveries": frames,
        "deliveries_per_s": round(frames / duration, 1),
        "receivers": receivers,
        "delivery_ratio": round(frames / (sent * receivers), 4) if sent and receivers else None,
        "subscribers_without_frames": sum(r["zero_conns"] for r in subs),
        "min_frames_per_subscriber": min((r["min_conn"] for r in subs if r["conns"]), default=0),
        "closed_during_run": sum(r["closed"] for r in replies),
        "lost_connections": sum(r["lost"] for r in replies),
        "client_cpu_util": round(client_cpu / duration, 3),
        "core_util": cores,
        "latency": stats.latency_summary(lat or lat_app) if latency else None,
        "latency_source": source if latency else None,
        "latency_app": stats.latency_summary(lat_app) if latency else None,
        # Each message's earliest 10 % of receivers (kernel timestamps only).
        "latency_first10": stats.latency_summary(first) if latency else None,
    }
    if cpu0 is not None and cpu1 is not None:
        out["server_cpu_util"] = round((cpu1 - cpu0) / duration, 3)
    if rss is not None:
        out["server_rss_kb"] = rss
    return out


def _wait_until(t: float, label: str, t0: float, t1: float) -> None:
    while True:
        now = time.monotonic()
        if now >= t:
            return
        if label:
            done = max(0.0, now - t0)
            phase = "warmup" if now < t0 else f"{done:4.1f}/{t1 - t0:.1f}s"
            bar_n = int(20 * min(1.0, done / max(t1 - t0, 1e-9)))
            progress(f"  {label} [{'#' * bar_n}{'.' * (20 - bar_n)}] {phase}")
        time.sleep(min(0.25, t - now))


def _speech(target: Target, path: str) -> Result:
    """How the clients spoke, for a result's params."""
    if target.protocol == "v1":
        return {"protocol": "fanout.v1", "path": path, "channel": target.channel}
    return {"protocol": "raw", "path": path}


def _procs_for(n: int, procs: int) -> int:
    return max(procs, math.ceil(n / PER_PROC_MAX))


def _check_connected(conn: Result, wanted: int, what: str) -> None:
    if conn["ok"] == 0 and wanted > 0:
        raise RuntimeError(f"no {what} could connect: {conn['errors']}")


# --------------------------------------------------------------------------------------------
# Scenarios


def fanout(
    target: Target,
    subscribers: int = 1000,
    publishers: int = 1,
    size: int = 64,
    window: int = 32,
    rate: float = 0.0,
    duration: float = 5.0,
    warmup: float = 1.0,
    procs: int = 2,
    path: str = "/ws/broadcast",
) -> Result:
    """N subscribers, P publishers; as fast as possible with a bounded window, or at a rate."""
    publish = {"size": size, "window": 0 if rate else window, "rate": rate / publishers}
    with Fleet(target, _procs_for(subscribers, procs)) as fleet:
        conn = fleet.connect_subs(subscribers, path=path)
        _check_connected(conn, subscribers, "subscriber")
        fleet.connect_pubs(publishers, {**publish, "path": path})
        m = measure(fleet, duration, warmup, publish, label=f"fanout {target.name} n={subscribers}")
    return {
        "scenario": "fanout",
        "server": target.name,
        "params": {
            "subscribers": subscribers,
            "publishers": publishers,
            "size": size,
            "window": window,
            "rate": rate,
            "duration": duration,
            "procs": procs,
            **_speech(target, path),
        },
        "connect": conn,
        **m,
    }


def latency(
    target: Target,
    subscribers: int = 1000,
    rates: Sequence[float] = (20.0,),
    size: int = 64,
    duration: float = 5.0,
    warmup: float = 1.0,
    procs: int = 2,
    path: str = "/ws/broadcast",
) -> Result:
    """Fixed publish rate(s); publish-to-receive latency from timestamps in the payload."""
    phases = []
    with Fleet(target, _procs_for(subscribers, procs)) as fleet:
        conn = fleet.connect_subs(subscribers, prefix=PAYLOAD_MIN, path=path, kernel_ts=True)
        _check_connected(conn, subscribers, "subscriber")
        fleet.connect_pubs(1, {"size": size, "path": path})
        for r in rates:
            publish = {"size": size, "rate": r, "window": 0}
            m = measure(
                fleet, duration, warmup, publish, latency=True, label=f"latency {target.name} {r}/s"
            )
            phases.append({"rate": r, **m})
    return {
        "scenario": "latency",
        "server": target.name,
        "params": {
            "subscribers": subscribers,
            "rates": list(rates),
            "size": size,
            "duration": duration,
            "procs": procs,
            **_speech(target, path),
        },
        "connect": conn,
        "phases": phases,
        "latency": phases[0]["latency"] if phases else None,
    }


def memory(
    target: Target,
    steps: Sequence[int] = (1000, 5000, 10000),
    settle: float = 2.0,
    procs: int = 2,
    path: str = "/ws/broadcast",
) -> Result:
    """Server RSS with 0 and then N idle connections; KB per idle connection."""
    if target.rss_kb is None:
        raise ValueError("the memory scenario needs to start the server (RSS is read from /proc)")
    points = []
    top = max(steps)
    with Fleet(target, _procs_for(top, procs)) as fleet:
        # Warm code paths (imports, caches) with a few short-lived connections, then baseline.
        fleet.connect_pubs(1, {"size": 64, "path": path})
        warm = fleet.connect_subs(50, path=path)
        _check_connected(warm, 50, "warm-up")
        time.sleep(settle)
        base = target.rss_kb()
        have = 50
        for n in sorted(steps):
            cpu0 = target.cpu_seconds() if target.cpu_seconds else None
            conn = fleet.connect_subs(n - have, path=path)
            # The server's CPU (kernel's share included) for this step's connects alone:
            # where the clients, not the server, bound connects/s, this still compares.
            cpu = target.cpu_seconds() - cpu0 if target.cpu_seconds and cpu0 is not None else None
            have += conn["ok"]
            time.sleep(settle)
            rss = target.rss_kb()
            fleet.all_subs({"op": "mark"}, 10)
            fleet.request({0: {"op": "publish_once"}}, 10)
            alive = sum(r["alive"] for r in fleet.all_subs({"op": "alive", "timeout": 10}, 20))
            points.append(
                {
                    "connections": have,
                    "alive": alive,
                    "rss_kb": rss,
                    "kb_per_conn": round((rss - base) / max(1, have - 50), 2),
                    "connect_errors": conn["errors"],
                    "connects_per_s": round(conn["ok"] / conn["elapsed"], 1)
                    if conn["elapsed"]
                    else None,
                    "server_us_per_connect": round(cpu / conn["ok"] * 1e6, 1)
                    if cpu is not None and conn["ok"]
                    else None,
                }
            )
            progress(f"  memory {target.name}: {have} conns, {rss / 1024:.1f} MiB")
        progress_done()
    last = points[-1]
    return {
        "scenario": "memory",
        "server": target.name,
        "params": {"steps": list(steps), "settle": settle, "procs": procs},
        "baseline_rss_kb": base,
        "points": points,
        "kb_per_conn": last["kb_per_conn"],
        "connections": last["connections"],
        "connects_per_s": last["connects_per_s"],
    }


TOKEN_MODES = ("none", "distinct", "same")


def connect_rate(
    target: Target,
    connections: int = 5000,
    concurrency: int = 200,
    procs: int = 2,
    path: str = "/ws/broadcast",
    token: str = "none",
    secret: str = TOKEN_SECRET,
) -> Result:
    """Open N connections as fast as possible (bounded concurrency per client process).

    ``token``: ``distinct`` puts a different HS256 JWT (``sub`` claim) in each URL's
    ``?token=`` (every signature checked by the server), ``same`` one token for all (the
    server's verified-token cache); the client processes sign them before the clock starts."""
    if token not in TOKEN_MODES:
        raise ValueError(f"token must be one of {', '.join(TOKEN_MODES)}")
    kw: Result = {"token": {"secret": secret, "mode": token}} if token != "none" else {}
    with Fleet(target, _procs_for(connections, procs)) as fleet:
        conn = fleet.connect_subs(
            connections, concurrency=concurrency, path=path, timeout=15.0, **kw
        )
        rss = target.rss_kb() if target.rss_kb else None
    return {
        "scenario": "connect",
        "server": target.name,
        "params": {
            "connections": connections,
            "concurrency": concurrency,
            "procs": procs,
            "token": token,
            **_speech(target, path),
        },
        "connected": conn["ok"],
        "failed": conn["failed"],
        "errors": conn["errors"],
        "elapsed_s": round(conn["elapsed"], 3),
        "connects_per_s": round(conn["ok"] / conn["elapsed"], 1) if conn["elapsed"] else None,
        "handshake_p50_ms": conn["handshake_p50_ms"],
        "handshake_max_ms": conn["handshake_max_ms"],
        "server_rss_kb": rss,
    }


def max_connections(
    target: Target,
    target_connections: int = 40_000,
    batch: int = 5000,
    time_limit: float = 240.0,
    concurrency: int = 200,
    path: str = "/ws/broadcast",
) -> Result:
    """Ramp up idle connections in batches until the target, a failing batch or the time
    limit; then count the connections that answer a ping (alive) and those that receive one
    broadcast (with one worker per broadcast island, only the publisher's worker's clients)."""
    deadline = time.monotonic() + time_limit
    procs = math.ceil(target_connections / PER_PROC_MAX) + 1
    steps = []
    have = 0
    with Fleet(target, procs) as fleet:
        fleet.connect_pubs(1, {"size": 64, "path": path})
        while have < target_connections and time.monotonic() < deadline:
            want = min(batch, target_connections - have)
            conn = fleet.connect_subs(want, concurrency=concurrency, path=path, timeout=15.0)
            have += conn["ok"]
            steps.append({"connections": have, "failed": conn["failed"], "errors": conn["errors"]})
            progress(f"  maxconn {target.name}: {have} open")
            if conn["failed"] > want * 0.05:
                break
        progress_done()
        status = fleet.all_subs({"op": "status"}, 30)
        open_now = sum(s["open"] for s in status)
        rss = target.rss_kb() if target.rss_kb else None
        pinged = sum(r["alive"] for r in fleet.all_subs({"op": "ping", "timeout": 20}, 60))
        fleet.all_subs({"op": "mark"}, 30)
        fleet.request({0: {"op": "publish_once"}}, 10)
        got = sum(r["alive"] for r in fleet.all_subs({"op": "alive", "timeout": 20}, 60))
    return {
        "scenario": "maxconn",
        "server": target.name,
        "params": {"target": target_connections, "batch": batch, "procs": procs},
        "opened": have,
        "open_at_end": open_now,
        "alive": pinged,
        "received_broadcast": got,
        "steps": steps,
        "server_rss_kb": rss,
        "kb_per_conn": round(rss / max(1, open_now), 2) if rss else None,
    }


def churn(
    target: Target,
    subscribers: int = 1000,
    churners: int = 50,
    hold: float = 0.2,
    rate: float = 100.0,
    size: int = 64,
    duration: float = 5.0,
    procs: int = 2,
    path: str = "/ws/broadcast",
) -> Result:
    """Stable subscribers receive a fixed-rate broadcast while other clients keep
    connecting and disconnecting."""
    with Fleet(target, _procs_for(subscribers, procs)) as fleet:
        conn = fleet.connect_subs(subscribers, prefix=PAYLOAD_MIN, path=path, kernel_ts=True)
        _check_connected(conn, subscribers, "subscriber")
        fleet.connect_pubs(1, {"size": size, "path": path})
        now = time.monotonic()
        t0, t1 = now + 1.3, now + 1.3 + duration
        per = split(churners, len(fleet.sub_workers))
        # Churners run in the subscriber processes, in parallel with the measurement.
        publish = {"size": size, "rate": rate, "window": 0}
        churn_cmds = {
            w: {
                "op": "churn",
                "t0": t0,
                "t1": t1,
                "parallel": c,
                "hold": hold,
                "path": path,
                "sources": sources_for(subscribers),
                **fleet.speech,
            }
            for w, c in zip(fleet.sub_workers, per, strict=True)
        }
        for w, c in churn_cmds.items():
            fleet.pipes[w].send(c)
        m = measure(fleet, duration, 1.0, publish, latency=True, label=f"churn {target.name}")
        counts: dict[str, int] = {}
        deadline = time.monotonic() + 30
        for w in churn_cmds:
            r = fleet.recv(w, "churn", deadline)
            for k, v in r.items():
                if isinstance(v, int):
                    counts[k] = counts.get(k, 0) + v
    return {
        "scenario": "churn",
        "server": target.name,
        "params": {
            "subscribers": subscribers,
            "churners": churners,
            "hold": hold,
            "rate": rate,
            "duration": duration,
        },
        "churn": counts,
        "churn_connects_per_s": round(counts.get("connects", 0) / duration, 1),
        **m,
    }


def slow_consumer(
    target: Target,
    subscribers: int = 1000,
    slow_share: float = 0.1,
    rate: float = 50.0,
    size: int = 1024,
    duration: float = 5.0,
    procs: int = 2,
    path: str = "/ws/broadcast",
) -> Result:
    """A share of clients stops reading; the others' throughput and latency should not move."""
    n_slow = int(subscribers * slow_share)
    n_fast = subscribers - n_slow
    publish = {"size": size, "rate": rate, "window": 0}
    with Fleet(target, _procs_for(subscribers, procs)) as fleet:
        conn = fleet.connect_subs(n_fast, prefix=PAYLOAD_MIN, path=path, kernel_ts=True)
        _check_connected(conn, n_fast, "subscriber")
        slow = fleet.connect_subs(n_slow, role="slow", path=path) if n_slow else {"ok": 0}
        fleet.connect_pubs(1, {"size": size, "path": path})
        before = measure(fleet, duration, 1.0, publish, latency=True, label="slow: all reading")
        rss0 = target.rss_kb() if target.rss_kb else None
        fleet.all_subs({"op": "pause", "role": "slow"}, 10)
        after = measure(fleet, duration, 0.5, publish, latency=True, label="slow: share stalled")
        status = fleet.all_subs({"op": "status"}, 10)
    slow_open = sum(s["open_by_role"].get("slow", 0) for s in status)

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 4) if a and b else None

    lat_b, lat_a = before["latency"] or {}, after["latency"] or {}
    return {
        "scenario": "slow",
        "server": target.name,
        "params": {
            "subscribers": subscribers,
            "slow_share": slow_share,
            "rate": rate,
            "size": size,
            "duration": duration,
        },
        "slow_connected": slow["ok"],
        "slow_still_open": slow_open,
        "before": before,
        "after": after,
        "fast_throughput_ratio": ratio(after["deliveries_per_s"], before["deliveries_per_s"]),
        "fast_p99_ratio": ratio(lat_a.get("p99_ms"), lat_b.get("p99_ms")),
        "server_rss_growth_kb": (after.get("server_rss_kb", 0) - rss0) if rss0 else None,
    }


def recovery(
    target: Target,
    clients: int = 1000,
    behind: int = 100,
    channel: str = HIST_CHANNEL,
    procs: int = 2,
    path: str = "/ws",
) -> Result:
    """History recovery: ``clients`` fanout.v1 clients subscribe to a history channel
    (keeping their position from the reply), disconnect; a publisher publishes ``behind``
    messages and sees them all come back; then every client reconnects at the same moment
    with ``sub`` ``since`` its position. Figure: from the first reconnect to the last complete
    reply; each reply is checked to hold exactly the ``behind`` publications, in order."""
    t = dataclasses.replace(target, protocol="v1", channel=channel)
    with Fleet(t, _procs_for(clients, procs)) as fleet:
        conn = fleet.connect_subs(clients, role="rec", path=path, full_reply=True)
        _check_connected(conn, clients, "subscriber")
        fleet.connect_pubs(1, {"size": 64, "path": path})
        dropped = sum(r["dropped"] for r in fleet.all_subs({"op": "drop", "role": "rec"}, 30))
        time.sleep(0.5)  # let the server see them go
        pub = fleet.request({0: {"op": "publish_n", "n": behind, "timeout": 30.0}}, 40)[0]
        if pub["acked"] != behind:
            raise RuntimeError(f"publisher got {pub['acked']} of its {behind} messages back")
        start_at = time.monotonic() + 0.5
        cpu0 = target.cpu_seconds() if target.cpu_seconds else None
        rec = fleet.all_subs(
            {
                "op": "reconnect",
                "role": "rec",
                "start_at": start_at,
                "timeout": 30.0,
                "sources": sources_for(clients),
            },
            60,
        )
        cpu1 = target.cpu_seconds() if target.cpu_seconds else None
        checks = fleet.all_subs({"op": "recovery_check", "expect": behind}, 60)
    errors: dict[str, int] = {}
    problems: dict[str, int] = {}
    for r in rec:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    for c in checks:
        for k, v in c["problems"].items():
            problems[k] = problems.get(k, 0) + v
    t_first = min(r["t_first"] for r in rec)
    t_last = max(r["t_last"] for r in rec)
    complete = sum(c["complete"] for c in checks)
    out: Result = {
        "scenario": "recovery",
        "server": target.name,
        "params": {
            "clients": clients,
            "behind": behind,
            "procs": procs,
            **_speech(t, path),
        },
        "connect": conn,
        "dropped": dropped,
        "published": pub["acked"],
        "reconnected": sum(r["ok"] for r in rec),
        "reconnect_failed": sum(r["failed"] for r in rec),
        "errors": errors,
        "recovery_s": round(t_last - t_first, 4),
        "complete": complete,
        "problems": problems,
        "problem_example": next((c["example"] for c in checks if c["example"]), None),
        "all_complete": complete == clients,
    }
    if cpu0 is not None and cpu1 is not None:
        out["server_cpu_s"] = round(cpu1 - cpu0, 3)
    return out


API_ENDPOINTS = ("publish", "healthz")


def api(
    target: Target,
    endpoint: str = "publish",
    connections: int = 32,
    subscribers: int = 2,
    size: int = 64,
    duration: float = 5.0,
    warmup: float = 1.0,
    max_requests: int = 2_000_000,
    procs: int = 2,
) -> Result:
    """HTTP requests/s and latency over keep-alive connections, one request in flight on
    each: ``POST /api/publish`` (64-byte JSON data to ``target.channel``) or, as the
    baseline of a plain Starlette JSON route on the same server, ``GET /healthz``.

    ``subscribers`` fanout.v1 clients on the channel count the publications that arrive,
    so the figure is of publishes delivered, not only answered."""
    if endpoint not in API_ENDPOINTS:
        raise ValueError(f"endpoint must be one of {', '.join(API_ENDPOINTS)}")
    host, port = target.host, target.port
    if endpoint == "publish":
        data = make_json_data(max(size, JSON_PAYLOAD_MIN), 0, 0, time.time_ns())
        body = publish_body(target.channel, data)
        headers = {"X-API-Key": target.api_key, "Content-Type": "application/json"}
        request = build_request(host, port, "POST", "/api/publish", body, headers)
    else:
        request = build_request(host, port, "GET", "/healthz")
    v1 = dataclasses.replace(target, protocol="v1")
    with Fleet(v1, procs) as fleet:
        conn: Result = {"ok": 0, "failed": 0, "errors": {}}
        if subscribers:
            conn = fleet.connect_subs(subscribers, workers=[0], path="/ws")
            _check_connected(conn, subscribers, "subscriber")
            fleet.request({0: {"op": "mark"}}, 10)
        now = time.monotonic()
        start = now + 1.0
        t0 = start + warmup
        t1 = t0 + duration
        load = fleet.sub_workers
        cmds = {
            w: {
                "op": "api",
                "request": request.hex(),
                "connections": c,
                "max_requests": m,
                "sources": sources_for(connections),
                "start": start,
                "t0": t0,
                "t1": t1,
            }
            for w, c, m in zip(
                load,
                split(connections, len(load)),
                split(max_requests, len(load)),
                strict=True,
            )
            if c > 0
        }
        for w, c in cmds.items():
            fleet.pipes[w].send(c)
        _wait_until(t0, f"api {endpoint} {target.name}", t0, t1)
        cpu0 = target.cpu_seconds() if target.cpu_seconds else None
        cores0 = cpu_times()
        _wait_until(t1, f"api {endpoint} {target.name}", t0, t1)
        cpu1 = target.cpu_seconds() if target.cpu_seconds else None
        cores = core_util(cores0, cpu_times())
        rss = target.rss_kb() if target.rss_kb else None
        progress_done()
        deadline = time.monotonic() + 30
        replies = [fleet.recv(w, "api", deadline) for w in cmds]
        ok_total = sum(v for r in replies for k, v in r["statuses"].items() if k.startswith("2"))
        received: list[int] = []
        if subscribers:
            expect = ok_total * subscribers if endpoint == "publish" else 0
            got = fleet.request({0: {"op": "count", "expect": expect, "timeout": 5.0}}, 15)[0]
            received = got["frames"]
    done = sum(r["done_window"] for r in replies)
    statuses: dict[str, int] = {}
    for r in replies:
        for k, v in r["window_statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    errors: dict[str, int] = {}
    for r in replies:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    lat = stats.merge_samples([r["latencies"] for r in replies])
    ok_window = sum(v for k, v in statuses.items() if k.startswith("2"))
    out: Result = {
        "scenario": "api",
        "server": target.name,
        "params": {
            "endpoint": endpoint,
            "method": "POST /api/publish" if endpoint == "publish" else "GET /healthz",
            "connections": connections,
            "subscribers": subscribers,
            "size": size if endpoint == "publish" else 0,
            "duration": duration,
            "warmup": warmup,
            "max_requests": max_requests,
            "procs": procs,
            "keep_alive": True,
        },
        "connect": conn,
        "connections_open": sum(r["connections"] for r in replies),
        "requests": done,
        "requests_per_s": round(done / duration, 1),
        "ok_per_s": round(ok_window / duration, 1),
        "statuses": statuses,
        "errors": errors,
        "lost_connections": sum(r["lost"] for r in replies),
        "latency": stats.latency_summary(lat),
        "requests_total": sum(r["done"] for r in replies),
        "ok_total": ok_total,
        "delivered_per_subscriber": received,
        "delivery_ratio": (
            round(min(received) / ok_total, 4)
            if received and ok_total and endpoint == "publish"
            else None
        ),
        "client_cpu_util": round(sum(r["cpu_s"] for r in replies) / duration, 3),
        "core_util": cores,
    }
    if cpu0 is not None and cpu1 is not None:
        out["server_cpu_util"] = round((cpu1 - cpu0) / duration, 3)
        out["server_cpu_us_per_request"] = round(1e6 * (cpu1 - cpu0) / done, 2) if done else None
    if rss is not None:
        out["server_rss_kb"] = rss
    return out
