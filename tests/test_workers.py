"""local:// across ``uvicorn --workers N``: every client sees every message, /stats sees everyone.

Real uvicorn supervisors with real workers, real WebSocket clients over loopback. Which worker
accepts a connection is the kernel's choice, so the tests open clients until /stats shows
every worker holding some.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.protocol import State

from app.services.cluster import ClusterView
from app.services.figures import ConnectionFigures, WorkerFigures, WorkerInfo
from app.services.message import Message
from tests.support.leftovers import dead_pid, leave_socket_file
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats
from tests.support.waiting import eventually

Client = websockets.ClientConnection
FAST_HEARTBEAT = {"FANOUT_HEARTBEAT_INTERVAL": "0.25", "FANOUT_HEARTBEAT_EXPIRY": "1.5"}


async def mesh_complete(server: ServerProcess, workers: int) -> bool:
    """Every worker is in /stats and linked both ways to every other."""
    stats = await fetch_stats(server)
    entries = stats["workers"]
    return len(entries) == workers and all(
        w["backend"]["peers"] == workers - 1 and w["backend"]["inbound"] == workers - 1
        for w in entries
    )


async def stats_total(server: ServerProcess, expected: int) -> bool:
    stats = await fetch_stats(server)
    per_worker = sum(w["connections"] for w in stats["workers"])
    return bool(stats["connections"]["total"] == expected and per_worker == expected)


async def open_on_every_worker(
    server: ServerProcess, clients: list[Client], workers: int, at_least: int, cap: int = 200
) -> dict[int, int]:
    """Open clients until each of ``workers`` workers holds ``at_least``; pid -> connections.

    The spread is read from the very response that counts every client: which worker answers
    a request is the kernel's choice, and another worker may still see a sibling as of its
    previous heartbeat (up to one interval old). Clients only arrive here, so no worker's
    entry can be too high: entries that add up to the number of clients are each exact.
    """
    counted: dict[str, Any] = {}

    async def counts_everyone() -> bool:
        stats = await fetch_stats(server)
        if stats["connections"]["total"] != len(clients):
            return False
        if sum(w["connections"] for w in stats["workers"]) != len(clients):
            return False
        counted.clear()
        counted.update(stats)
        return True

    while True:
        for _ in range(4):
            clients.append(await websockets.connect(server.ws("/ws/broadcast")))
        assert await eventually(counts_everyone, within=15)
        spread = {w["pid"]: w["connections"] for w in counted["workers"]}
        if len(spread) == workers and min(spread.values()) >= at_least:
            return spread
        assert len(clients) < cap, f"{cap} clients and still not on every worker: {spread}"


async def every_worker_agrees(server: ServerProcess, spread: dict[int, int]) -> None:
    """Wait until every worker answers /stats with ``spread``, and none goes back on it.

    Each worker answers with its own live figures and the others' last heartbeats, so until
    every worker has heard every sibling's heartbeat since the last change, answers from two
    workers may differ. Once a worker has the right answer it must keep it: heartbeats of one
    worker are taken in order, and nothing changes here.
    """
    right: set[int] = set()

    async def all_right() -> bool:
        stats = await fetch_stats(server)
        pid = stats["worker"]["pid"]
        answer = {w["pid"]: w["connections"] for w in stats["workers"]}
        total = stats["connections"]["total"]
        if pid in right:
            assert (answer, total) == (spread, sum(spread.values())), f"worker {pid} went back"
        elif answer == spread and total == sum(spread.values()):
            right.add(pid)
        return right == set(spread)

    assert await eventually(all_right, within=30), f"workers with the right answer: {right}"


async def exchange_exactly_once(clients: list[Client], tag: str) -> None:
    """Each client sends one message; each receives every one exactly once."""
    expected = {f"{tag}-{i}" for i in range(len(clients))}
    for i, ws in enumerate(clients):
        await ws.send(f"{tag}-{i}")

    async def collect(ws: Client) -> list[str]:
        got = []
        for _ in range(len(expected)):
            msg = await asyncio.wait_for(ws.recv(), 15)
            assert isinstance(msg, str)
            got.append(msg)
        return got

    received = await asyncio.gather(*(collect(ws) for ws in clients))
    for got in received:
        assert sorted(got) == sorted(expected)
    # Nothing more may follow: a duplicate would arrive right behind the originals.
    for ws in clients:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.05 if ws is not clients[0] else 0.5)


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


async def test_four_workers_every_client_gets_every_message_once(
    start_server: StartServer, local_dir: Path
) -> None:
    server = start_server(env={"FANOUT_LOCAL_DIR": str(local_dir)}, args=["--workers", "4"])
    assert await eventually(lambda: mesh_complete(server, 4), within=20)
    clients: list[Client] = []
    try:
        spread = await open_on_every_worker(server, clients, workers=4, at_least=2)
        await every_worker_agrees(server, spread)
        before = await fetch_stats(server)
        await exchange_exactly_once(clients, "hello")

        # Once heartbeats have had time, the figures are the same whichever worker answers,
        # request after request.
        for _ in range(12):
            stats = await fetch_stats(server)
            assert stats["connections"]["total"] == len(clients)
            assert stats["connections"]["by_endpoint"]["broadcast"] == len(clients)
            assert stats["channels"]["default"] == len(clients)
            assert {w["pid"]: w["connections"] for w in stats["workers"]} == spread
            assert stats["cluster"]["workers"] == 4

        n = len(clients)

        async def counted() -> bool:
            stats = await fetch_stats(server)
            received = stats["messages"]["received"] - before["messages"]["received"]
            delivered = stats["messages"]["delivered"] - before["messages"]["delivered"]
            return bool(received == n and delivered == n * n)

        assert await eventually(counted, within=10), "cluster message counts add up"
    finally:
        await close_all(clients)
    assert await eventually(lambda: stats_total(server, 0), within=10)


async def test_killed_worker_is_replaced_and_rejoins(
    start_server: StartServer, local_dir: Path
) -> None:
    env = {"FANOUT_LOCAL_DIR": str(local_dir), **FAST_HEARTBEAT}
    server = start_server(env=env, args=["--workers", "3"])
    assert await eventually(lambda: mesh_complete(server, 3), within=20)
    clients: list[Client] = []
    fresh: list[Client] = []
    try:
        spread = await open_on_every_worker(server, clients, workers=3, at_least=1)
        victim = min(spread)
        group = (await fetch_stats(server))["backend"]["group"]
        victim_socket = local_dir / group / f"{victim}.sock"
        assert victim_socket.exists()
        os.kill(victim, signal.SIGKILL)

        # The victim's clients lose their connection; nobody else does.
        assert await eventually(
            lambda: sum(ws.state is State.CLOSED for ws in clients) == spread[victim], within=10
        )
        survivors = [ws for ws in clients if ws.state is State.OPEN]
        assert len(survivors) == len(clients) - spread[victim]
        await exchange_exactly_once(survivors, "survivors")

        # uvicorn restarts the worker; it rejoins, the dead one's entry and socket go.
        async def replaced() -> bool:
            stats = await fetch_stats(server)
            pids = {w["pid"] for w in stats["workers"]}
            return victim not in pids and await mesh_complete(server, 3)

        assert await eventually(replaced, within=20)
        assert await eventually(lambda: not victim_socket.exists(), within=10)
        await close_all(survivors)
        assert await eventually(lambda: stats_total(server, 0), within=10)

        spread = await open_on_every_worker(server, fresh, workers=3, at_least=1)
        assert victim not in spread
        await exchange_exactly_once(fresh, "after-restart")
    finally:
        await close_all(clients + fresh)


async def test_single_servers_never_join_each_other(
    start_server: StartServer, local_dir: Path
) -> None:
    # Two plain servers from one shell share a parent pid and a socket folder: still apart.
    env = {"FANOUT_LOCAL_DIR": str(local_dir)}
    a, b = start_server(env=env), start_server(env=env)
    async with (
        websockets.connect(a.ws("/ws/broadcast")) as on_a,
        websockets.connect(b.ws("/ws/broadcast")) as on_b,
    ):
        for server in (a, b):
            stats = await fetch_stats(server)
            assert stats["backend"]["name"] == "local"
            assert stats["backend"]["group"] is None
            assert stats["cluster"]["workers"] == 1
        await on_a.send("only for a")
        assert await on_a.recv() == "only for a"
        await on_b.send("only for b")
        assert await on_b.recv() == "only for b"  # not a's message first
    assert list(local_dir.iterdir()) == []  # noqa: ASYNC240 a group of one needs no socket


async def test_stale_sockets_of_a_crashed_run_are_removed(
    start_server: StartServer, local_dir: Path
) -> None:
    dead = dead_pid()
    crashed = local_dir / f"sup-{dead}"  # a supervisor that died with its workers
    crashed.mkdir()
    leave_socket_file(crashed / f"{dead}.sock")
    group = local_dir / "tests"  # an explicit group, with a dead member's socket in it
    group.mkdir()
    leave_socket_file(group / f"{dead}.sock")

    env = {"FANOUT_LOCAL_DIR": str(local_dir), "FANOUT_LOCAL_GROUP": "tests"}
    server = start_server(env=env, args=["--workers", "2"])
    assert await eventually(lambda: mesh_complete(server, 2), within=20)
    assert await eventually(lambda: not crashed.exists() and not (group / f"{dead}.sock").exists())

    async def removals_reported() -> bool:
        stats = await fetch_stats(server)
        removed = sum(int(w["backend"]["stale_sockets_removed"]) for w in stats["workers"])
        return removed >= 2

    assert await eventually(removals_reported, within=10)
    stats = await fetch_stats(server)
    assert stats["backend"]["group"] == "tests"
    assert sorted(p.name for p in group.iterdir()) == sorted(
        f"{w['pid']}.sock" for w in stats["workers"]
    )
    server.stop()
    assert not group.exists(), "the last worker to stop removes the group folder"


def test_a_late_heartbeat_never_replaces_a_newer_one() -> None:
    # Two views of one worker's numbered heartbeats; the other receives them out of order.
    sent: list[Message] = []
    figures = WorkerFigures(
        connections=ConnectionFigures(total=1), worker=WorkerInfo(pid=1, connections=1)
    )
    sender = ClusterView(
        worker_id="h:1",
        interval=1.0,
        expiry=60.0,
        publish=lambda _channel, message: sent.append(message),
        snapshot=lambda: figures,
    )
    receiver = ClusterView(
        worker_id="h:2",
        interval=1.0,
        expiry=60.0,
        publish=lambda _channel, _message: None,
        snapshot=WorkerFigures,
    )
    sender._send_heartbeat()
    figures = WorkerFigures(
        connections=ConnectionFigures(total=2), worker=WorkerInfo(pid=1, connections=2)
    )
    sender._send_heartbeat()
    older, newer = sent
    receiver.receive(newer)
    receiver.receive(older)
    assert [stats.connections.total for _, stats in receiver.peers()] == [2]

    # A restarted worker with the same id (a reused pid) numbers afresh and is heard.
    restarted = ClusterView(
        worker_id="h:1",
        interval=1.0,
        expiry=60.0,
        publish=lambda _channel, message: sent.append(message),
        snapshot=lambda: WorkerFigures(connections=ConnectionFigures(total=0)),
    )
    restarted._send_heartbeat()
    receiver.receive(sent[-1])
    assert [stats.connections.total for _, stats in receiver.peers()] == [0]


def test_unknown_backend_is_refused_at_start() -> None:
    env = {**os.environ, "FANOUT_BACKEND": "carrier-pigeon://"}
    result = subprocess.run(
        [sys.executable, "-c", "import app.main"], env=env, capture_output=True, timeout=30
    )
    assert result.returncode != 0
    assert b"FANOUT_BACKEND='carrier-pigeon://': unknown scheme 'carrier-pigeon'" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_sibling_that_falls_behind_is_dropped_and_told_of_the_gap(
    start_server: StartServer, local_dir: Path
) -> None:
    # Two single-process servers in one named group: which client is where is known, and a
    # stopped process has no supervisor to restart it.
    env = {
        "FANOUT_LOCAL_DIR": str(local_dir),
        "FANOUT_LOCAL_GROUP": "overflow",
        "FANOUT_LOCAL_PEER_BUFFER_BYTES": "65536",
        **FAST_HEARTBEAT,
    }
    a, b = start_server(env=env), start_server(env=env)
    assert await eventually(lambda: mesh_complete(a, 2), within=15)
    assert b.proc is not None
    async with (
        websockets.connect(a.ws("/ws/broadcast"), max_size=None) as on_a,
        websockets.connect(b.ws("/ws/broadcast"), max_size=None) as on_b,
    ):
        b.proc.send_signal(signal.SIGSTOP)
        try:
            big = b"x" * 500_000
            for _ in range(20):  # 10 MB for a sibling that reads nothing
                await on_a.send(big)
                assert await on_a.recv() == big  # a's own clients are not held up

            async def a_dropped_b() -> bool:
                stats = await fetch_stats(a)
                return int(stats["backend"]["peer_overflows"]) >= 1

            assert await eventually(a_dropped_b, within=10)
        finally:
            b.proc.send_signal(signal.SIGCONT)

        async def gap_notice() -> bool:
            msg = await asyncio.wait_for(on_b.recv(), 15)
            return msg == '{"type":"fanout.gap","reason":"peer_overflow"}'

        assert await eventually(gap_notice, within=20), "b's client is told it missed messages"
        assert await eventually(lambda: mesh_complete(a, 2), within=15)
        await on_a.send("after")
        assert await on_a.recv() == "after"
        while (msg := await asyncio.wait_for(on_b.recv(), 10)) != "after":
            # Still in flight before a link was dropped; or another notice, as the link may
            # have been reopened and overflowed again while b was stopped.
            assert msg in (big, '{"type":"fanout.gap","reason":"peer_overflow"}')
