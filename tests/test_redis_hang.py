"""redis:// when Redis hangs without closing, and exactly-once delivery across hosts.

Two servers (each its own "host") share one real redis-server, which is stopped with
SIGSTOP: its sockets stay open and the kernel still accepts bytes for it, but nothing
answers. The payload tests write into Redis directly, as a retried or foreign write would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
import websockets

from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats
from tests.support.waiting import eventually
from tests.test_redis_backend import FAST, healthz, recv_text

redis_asyncio = pytest.importorskip("redis.asyncio")

TIMEOUT = 1.0
"""FANOUT_REDIS_TIMEOUT in these tests."""
SLACK = 3.0
"""Allowance on top of the timeout for a shared, busy test machine."""
HANG = 5.0
Client = websockets.ClientConnection
ENV = {
    **FAST,
    "FANOUT_REDIS_TIMEOUT": str(TIMEOUT),
    "FANOUT_REDIS_RECONNECT_MAX": "0.5",
}


def env(redis_server: RedisServer) -> dict[str, str]:
    return {**ENV, "FANOUT_BACKEND": redis_server.url}


async def until_heard(pub: Client, sub: Client) -> None:
    """Probe from ``pub`` until ``sub`` hears it: both ends are subscribed across Redis.
    Every probe sent before the one heard has then arrived or never will (one sender's
    messages keep their order)."""
    for i in range(30):
        await pub.send(f"probe-{i}")
        with contextlib.suppress(TimeoutError):
            while await asyncio.wait_for(sub.recv(), 0.5) != f"probe-{i}":
                pass
            return
    raise AssertionError("the servers do not hear each other over Redis")


async def statuses(*servers: ServerProcess) -> list[int]:
    return [(await healthz(s))[0] for s in servers]


async def test_a_redis_hang_is_reported_and_each_message_arrives_once_or_under_a_gap_notice(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = start_server(env=env(redis_server)), start_server(env=env(redis_server))
    stream: list[int | str] = []
    """What b's subscriber got, in order: numbers, and gap notices as their reason."""
    async with (
        websockets.connect(a.ws("/ws/broadcast/hang")) as pub,
        websockets.connect(b.ws("/ws/broadcast/hang")) as sub,
    ):
        await until_heard(pub, sub)
        sent = 0
        stop = asyncio.Event()

        async def publish() -> None:  # a steady, bounded rate: 50 messages a second
            nonlocal sent
            while not stop.is_set():
                await pub.send(str(sent))
                sent += 1
                await asyncio.sleep(0.02)

        async def drain_own_echo() -> None:  # the sender is a subscriber too (echo on)
            async for _ in pub:
                pass

        async def read() -> None:
            async for msg in sub:
                assert isinstance(msg, str)
                if msg.startswith("{"):
                    notice = json.loads(msg)
                    assert notice["type"] == "fanout.gap"
                    stream.append(notice["reason"])
                else:
                    stream.append(int(msg))

        tasks = [asyncio.create_task(f()) for f in (publish, drain_own_echo, read)]
        try:
            await asyncio.sleep(1.5)
            assert (await statuses(a, b)) == [200, 200]

            redis_server.pause()
            paused_at = time.monotonic()
            try:
                seen_down: dict[str, float] = {}
                while len(seen_down) < 2 and time.monotonic() - paused_at < HANG - 0.5:
                    for name, server in (("a", a), ("b", b)):
                        if name not in seen_down and (await healthz(server))[0] == 503:
                            seen_down[name] = time.monotonic() - paused_at
                    await asyncio.sleep(0.1)
                assert set(seen_down) == {"a", "b"}, f"503 during the hang: {seen_down}"
                assert max(seen_down.values()) <= TIMEOUT + SLACK, seen_down
                _, body = await healthz(b)
                assert body["backend"]["status"] == "down"
                await asyncio.sleep(max(0.0, HANG - (time.monotonic() - paused_at)))
            finally:
                redis_server.resume()

            async def both_up() -> bool:
                return (await statuses(a, b)) == [200, 200]

            assert await eventually(both_up, within=15)
            await asyncio.sleep(2)  # messages flow again
            stop.set()
            await tasks[0]
            last = sent - 1

            async def got_the_last() -> bool:
                return bool(stream) and stream[-1] == last

            assert await eventually(got_the_last, within=10), stream[-5:]
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                    await task

    numbers = [x for x in stream if isinstance(x, int)]
    assert len(numbers) == len(set(numbers)), "a message arrived twice"
    assert numbers == sorted(numbers), "one publisher's messages arrive in order"
    # Every number missing is covered: a gap notice arrived between its neighbours.
    expected, noticed, uncovered = 0, False, []
    for item in stream:
        if isinstance(item, str):
            noticed = True
            continue
        if item != expected and not noticed:
            uncovered.append(range(expected, item))
        expected, noticed = item + 1, False
    assert not uncovered, f"lost without a gap notice: {uncovered}"
    assert len(numbers) < sent, "the hang lost messages (else this test proves little)"
    reasons = {x for x in stream if isinstance(x, str)}
    assert {"backend_down", "backend_reconnected"} <= reasons

    for server in (a, b):
        backend = (await fetch_stats(server))["backend"]
        assert backend["status"] == "up"
        assert backend["outages"] >= 1
        assert backend["health_check_failures"] >= 1


async def redis_client(redis_server: RedisServer) -> Any:
    return redis_asyncio.Redis.from_url(redis_server.url)


async def test_a_write_repeated_in_redis_is_delivered_once(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = start_server(env=env(redis_server)), start_server(env=env(redis_server))
    client = await redis_client(redis_server)
    spy = client.pubsub()
    await spy.subscribe("fanout:dup")
    try:
        async with (
            websockets.connect(a.ws("/ws/broadcast/dup")) as pub,
            websockets.connect(b.ws("/ws/broadcast/dup")) as sub,
        ):
            await until_heard(pub, sub)
            await pub.send("once")
            assert await recv_text(sub) == "once"
            payload = b""
            deadline = time.monotonic() + 10
            while not payload.endswith(b"once"):  # a's payload, as Redis carried it
                assert time.monotonic() < deadline
                item = await spy.get_message(timeout=1)
                if item is not None and item["type"] == "message":
                    payload = item["data"]
            await client.publish("fanout:dup", payload)  # the write a retry sends again
            await pub.send("next")
            assert await recv_text(sub) == "next"
            stats = await fetch_stats(b)
            assert stats["backend"]["duplicates_dropped"] == 1
    finally:
        await spy.aclose()
        await client.aclose()


async def test_payloads_are_judged_by_kind_and_numbers(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    # The wire contract (app/services/backends/redis_wire.py), written from outside.
    server = start_server(env=env(redis_server))
    client = await redis_client(redis_server)
    origin = b"elsewher"

    def v2(kind: bytes, seq: int, prev: int, data: bytes) -> bytes:
        return origin + kind + seq.to_bytes(8, "big") + prev.to_bytes(8, "big") + data

    try:
        async with websockets.connect(server.ws("/ws/broadcast/wire")) as sub:

            async def subscribed() -> bool:
                return bool(await client.publish("fanout:wire", origin + b"tping") == 1)

            assert await eventually(subscribed, within=10)
            assert await recv_text(sub) == "ping"  # version 1 text: still understood
            for payload in (
                v2(b"T", 10, 0, b"first"),
                v2(b"B", 11, 10, b"\x00second"),
                v2(b"B", 11, 10, b"\x00second"),  # a duplicate: dropped
                origin + b"x" + b"an unknown kind",  # refused, never delivered as binary
                v2(b"T", 15, 14, b"after a loss"),  # 12-14 on this channel never came
            ):
                await client.publish("fanout:wire", payload)
            assert await recv_text(sub) == "first"
            assert await asyncio.wait_for(sub.recv(), 10) == b"\x00second"
            notice = json.loads(await recv_text(sub))
            assert notice == {"type": "fanout.gap", "reason": "backend_lost"}
            assert await recv_text(sub) == "after a loss"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sub.recv(), 0.3)
            backend = (await fetch_stats(server))["backend"]
            assert backend["duplicates_dropped"] == 1
            assert backend["gaps_detected"] == 1
            assert backend["payload_refused"] == 1
    finally:
        await client.aclose()
