"""Presence under 1,000 members: the service call, and the round trip from a client.

    python -m bench.presence [--members 1000] [--number 20000] [--calls 2000]

1. ``PresenceService.stats`` and ``.presence`` on a channel of ``--members`` members (half
   of them another worker's, as a digest brings them), timed with ``timeit``: best of 5.
2. A real server (``uvicorn app.main:app``, one worker) with ``--members`` fanout.v1 clients
   subscribed to one presence channel; one more client sends ``presence_stats`` (and
   ``presence``) ``--calls`` times, one at a time: p50/p99/max of the round trip.

Prints one JSON line on stdout and a summary on stderr, like the rest of the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import httpx
import websockets

from app.services.message import Message
from app.services.presence import PresenceService
from app.services.presence_table import Member
from app.services.rules import ChannelRules
from app.services.tokens import Identity
from bench.servers import free_port
from bench.stats import latency_summary

RULES = """
[[channels]]
match = "bench.*"
presence = true
join_leave = true
"""
CHANNEL = "bench.room"


def _ignore(_channel: str, _message: Message) -> None:
    """Where the bench's events and control messages go: nowhere."""


def service_with(members: int) -> PresenceService:
    """A worker's service holding ``members`` on CHANNEL: half its own, half a peer's."""
    service = PresenceService(
        worker_id="bench:1",
        rules=ChannelRules.from_toml(RULES),
        interval=1.0,
        expiry=3.5,
        max_members=10_000,
        max_clients=1_000,
        publish_control=lambda message: None,
        publish_event=_ignore,
        deliver_event=_ignore,
    )
    own = members // 2
    for i in range(own):
        info = {"name": f"User {i}", "avatar": f"https://example.com/{i}.png"}
        service.joined(CHANNEL, f"own-{i}", Identity(user=f"u{i}", exp=None, info=info))
    peer = {
        CHANNEL: [Member(f"peer-{i}", f"p{i}", b'{"name":"Peer"}') for i in range(members - own)]
    }
    service.table.replace("bench:2", peer)
    return service


def time_service(members: int, number: int) -> dict[str, float]:
    """Best microseconds per call of stats() and presence()."""
    service = service_with(members)
    assert service.stats(CHANNEL) == (members, members)
    result = {}
    for name, call, calls in (
        ("presence_stats_us", lambda: service.stats(CHANNEL), number),
        ("presence_us", lambda: service.presence(CHANNEL), max(1, number // 100)),
    ):
        best = min(timeit.repeat(call, number=calls, repeat=5))
        result[name] = round(best / calls * 1e6, 3)
    return result


async def round_trips(port: int, members: int, calls: int) -> dict[str, Any]:
    """Open ``members`` subscribers, then time ``calls`` presence_stats and presence."""
    url = f"ws://127.0.0.1:{port}/ws"
    proto = [websockets.Subprotocol("fanout.v1")]
    clients = []
    try:
        for i in range(members):
            ws = await websockets.connect(url, subprotocols=proto, max_queue=None)
            await ws.send(json.dumps({"id": 1, "op": "sub", "ch": CHANNEL}))
            clients.append(ws)
            if i % 100 == 99:
                await asyncio.sleep(0)
        asker = await websockets.connect(url, subprotocols=proto, max_size=None)
        clients.append(asker)
        await asker.send(json.dumps({"id": 1, "op": "sub", "ch": CHANNEL}))
        while True:  # every subscription in: the asker's own reply and the counts say so
            await asker.send(json.dumps({"id": 2, "op": "presence_stats", "ch": CHANNEL}))
            body = await _reply(asker, 2)
            if body["res"]["clients"] == members + 1:
                break
            await asyncio.sleep(0.05)
        figures: dict[str, Any] = {}
        for op, count in (("presence_stats", calls), ("presence", max(1, calls // 10))):
            samples = []
            for n in range(count):
                command = json.dumps({"id": 10 + n, "op": op, "ch": CHANNEL})
                started = time.perf_counter_ns()
                await asker.send(command)
                await _reply(asker, 10 + n)
                samples.append(time.perf_counter_ns() - started)
            figures[op] = latency_summary(samples)
            figures[op]["max_at"] = samples.index(max(samples))  # which call: a warm-up?
        return figures
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


async def _reply(ws: websockets.ClientConnection, id: int) -> dict[str, Any]:
    while True:
        frame = await ws.recv()
        body: dict[str, Any] = json.loads(frame)
        if body.get("id") == id:
            return body


def run_server(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    rules = folder / "fanout.toml"
    rules.write_text(RULES)
    port = free_port()
    env = {
        **os.environ,
        "FANOUT_CONFIG": str(rules),
        "FANOUT_BACKEND": "memory://",
        "FANOUT_STATS_LOG_INTERVAL": "0",
        "FANOUT_MAX_CONNECTIONS": "0",
    }
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--number", type=int, default=20_000, help="timeit calls per run")
    parser.add_argument("--calls", type=int, default=2000, help="round trips from a client")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"members": args.members}
    result["service"] = time_service(args.members, args.number)
    with tempfile.TemporaryDirectory() as folder:
        proc, port = run_server(Path(folder))
        try:
            result["round_trip"] = asyncio.run(round_trips(port, args.members, args.calls))
        finally:
            proc.terminate()
            proc.wait(10)
    print(json.dumps(result))
    service, trips = result["service"], result["round_trip"]
    print(
        f"presence under {args.members} members:\n"
        f"  service: presence_stats {service['presence_stats_us']} us,"
        f" presence (list) {service['presence_us']} us per call\n"
        f"  round trip presence_stats: p50 {trips['presence_stats']['p50_ms']} ms,"
        f" p99 {trips['presence_stats']['p99_ms']} ms, max {trips['presence_stats']['max_ms']} ms\n"
        f"  round trip presence (list): p50 {trips['presence']['p50_ms']} ms,"
        f" p99 {trips['presence']['p99_ms']} ms",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
