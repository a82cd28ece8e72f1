"""WS /ws/broadcast against a real server: everyone gets everything, in each sender's order."""

from __future__ import annotations

import asyncio

import websockets

from tests.support.clients import all_text, receive_many
from tests.support.servers import ServerProcess
from tests.support.stats import channel_has, fetch_stats, total_is
from tests.support.waiting import eventually


async def test_every_client_gets_every_message_sender_included(server: ServerProcess) -> None:
    async with (
        websockets.connect(server.ws("/ws/broadcast")) as a,
        websockets.connect(server.ws("/ws/broadcast")) as b,
        websockets.connect(server.ws("/ws/broadcast")) as c,
    ):
        assert await eventually(lambda: channel_has(server, "default", 3)), (
            "three subscribers registered"
        )
        await a.send("from a")
        await b.send(b"\x00binary from b\xff")
        for ws in (a, b, c):
            assert await ws.recv() == "from a"
            assert await ws.recv() == b"\x00binary from b\xff"


async def test_each_senders_order_is_kept(server: ServerProcess) -> None:
    clients = [await websockets.connect(server.ws("/ws/broadcast")) for _ in range(4)]
    senders = clients[:3]
    try:
        assert await eventually(lambda: channel_has(server, "default", 4))
        n = 200
        sent = asyncio.gather(*(_send_numbered(ws, f"s{i}", n) for i, ws in enumerate(senders)))
        received = await asyncio.gather(*(receive_many(ws, 3 * n, within=10) for ws in clients))
        await sent
        for messages in received:
            assert all_text(messages)
            seen: dict[str, list[int]] = {f"s{i}": [] for i in range(3)}
            for msg in messages:
                sender, number = msg.split(":")
                seen[sender].append(int(number))
            for numbers in seen.values():
                assert numbers == list(range(n))
    finally:
        for ws in clients:
            await ws.close()


async def test_channels_are_separate(server: ServerProcess) -> None:
    async with (
        websockets.connect(server.ws("/ws/broadcast/room-1")) as r1,
        websockets.connect(server.ws("/ws/broadcast/room-2")) as r2,
        websockets.connect(server.ws("/ws/broadcast")) as default,
    ):
        assert await eventually(lambda: channel_has(server, "room-2", 1))
        await r1.send("in room 1")
        assert await r1.recv() == "in room 1"
        await r2.send("in room 2")
        assert await r2.recv() == "in room 2"
        await default.send("in default")
        assert await default.recv() == "in default"
        stats = await fetch_stats(server)
        assert stats["channels"]["room-1"] == 1
        assert stats["connections"]["by_endpoint"]["broadcast"] >= 3


async def test_stats_count_connections_and_deliveries(server: ServerProcess) -> None:
    before = await fetch_stats(server)
    clients = [await websockets.connect(server.ws("/ws/broadcast")) for _ in range(5)]
    try:
        assert await eventually(lambda: total_is(server, before["connections"]["total"] + 5))
        await clients[0].send("count me")
        for ws in clients:
            assert await ws.recv() == "count me"
        after = await fetch_stats(server)
        assert after["messages"]["received"] - before["messages"]["received"] == 1
        assert after["messages"]["delivered"] - before["messages"]["delivered"] == 5
        assert after["backend"]["status"] == "up"
        assert after["uptime_seconds"] > 0
    finally:
        for ws in clients:
            await ws.close()
    assert await eventually(lambda: total_is(server, before["connections"]["total"]))


async def _send_numbered(ws: websockets.ClientConnection, tag: str, n: int) -> None:
    for i in range(n):
        await ws.send(f"{tag}:{i}")
