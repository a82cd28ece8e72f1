"""A client that vanishes mid-broadcast (TCP reset) costs nobody anything and leaks nothing."""

from __future__ import annotations

import asyncio

import websockets

from tests.support.clients import assert_still_serving
from tests.support.rawws import RawClient
from tests.support.servers import ServerProcess
from tests.support.stats import fetch_stats, total_is
from tests.support.waiting import eventually


async def test_reset_mid_broadcast(server: ServerProcess) -> None:
    before = await fetch_stats(server)
    base = before["connections"]["total"]
    readers = [await websockets.connect(server.ws("/ws/broadcast")) for _ in range(3)]
    doomed = [await RawClient.open(server.port, "/ws/broadcast") for _ in range(5)]
    assert await eventually(lambda: total_is(server, base + 8))

    n = 300
    counts = [asyncio.create_task(_count(ws, n)) for ws in readers]
    for i in range(n):
        await readers[i % 3].send(f"m{i}")
        if i == n // 2:
            for client in doomed:
                client.reset()  # RST, no close frame, with messages in flight to it
    for task in counts:
        assert await task == n

    assert await eventually(lambda: total_is(server, base + 3))
    for ws in readers:
        await ws.close()
    assert await eventually(lambda: total_is(server, base))
    stats = await fetch_stats(server)
    assert stats["channels"].get("default", 0) == 0
    assert "Traceback" not in server.log()
    await assert_still_serving(server)


async def _count(ws: websockets.ClientConnection, n: int) -> int:
    got = 0
    for _ in range(n):
        await asyncio.wait_for(ws.recv(), 20)
        got += 1
    return got
