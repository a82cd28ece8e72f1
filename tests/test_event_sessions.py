"""Sessions fed by callbacks (app/routes/events.py): no task per idle socket, same answers.

On Fanout's own WebSocket protocol a session takes its events by callback once accepted,
so an idle socket holds no task; the receive loop (here forced by
FANOUT_DIRECT_WRITES=false) holds one per socket. Both must behave the same to clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from app.server.websocket import _resume
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats, total_is
from tests.support.waiting import eventually

IDLE = 40


@contextlib.asynccontextmanager
async def idle_sockets(server: ServerProcess) -> AsyncIterator[list[ClientConnection]]:
    """IDLE raw sockets and IDLE fanout.v1 sockets (one subscription each), open."""
    opened: list[ClientConnection] = []
    try:
        for i in range(IDLE):
            opened.append(await websockets.connect(server.ws("/ws/broadcast/idle")))
            v1 = await websockets.connect(server.ws("/ws"), subprotocols=["fanout.v1"])  # type: ignore[list-item]
            await v1.send(json.dumps({"id": 1, "op": "sub", "ch": f"idle.{i}"}))
            await asyncio.wait_for(v1.recv(), 10)
            opened.append(v1)
        yield opened
    finally:
        for ws in opened:
            await ws.close()


async def _tasks(server: ServerProcess) -> int:
    tasks: int = (await fetch_stats(server))["worker"]["tasks"]
    return tasks


@pytest.mark.parametrize("direct", [True, False], ids=["callbacks", "receive-loop"])
async def test_idle_sockets_hold_a_task_each_only_in_the_receive_loop(
    start_server: StartServer, direct: bool
) -> None:
    server = start_server({"FANOUT_DIRECT_WRITES": "true" if direct else "false"})
    before = await _tasks(server)
    async with idle_sockets(server) as sockets:
        await eventually(lambda: total_is(server, len(sockets)))
        during = await _tasks(server)
        # They still work: a broadcast reaches every raw one, a v1 publish its subscriber.
        await sockets[0].send("hello")
        raw = sockets[0::2]
        assert [await asyncio.wait_for(ws.recv(), 10) for ws in raw] == ["hello"] * IDLE
        await sockets[1].send(json.dumps({"id": 2, "op": "pub", "ch": "idle.0", "data": 1}))
        frames = [json.loads(await asyncio.wait_for(sockets[1].recv(), 10)) for _ in range(2)]
        assert {"id": 2, "res": {}} in frames and {"ch": "idle.0", "d": 1} in frames
    if direct:
        assert during - before < 5, (before, during)
    else:
        assert during - before >= 2 * IDLE, (before, during)
    await eventually(lambda: total_is(server, 0))


@pytest.mark.parametrize("direct", [True, False], ids=["callbacks", "receive-loop"])
async def test_every_way_a_session_ends_gives_the_same_close_either_way(
    start_server: StartServer, direct: bool
) -> None:
    server = start_server(
        {"FANOUT_DIRECT_WRITES": "true" if direct else "false", "FANOUT_MAX_MESSAGE_BYTES": "64"}
    )
    # The client closes: its code is echoed.
    ws = await websockets.connect(server.ws("/ws/echo"))
    await ws.close(4321, "bye")
    assert ws.close_code == 4321
    # The session closes: a message over the limit ends it with 1009.
    ws = await websockets.connect(server.ws("/ws/broadcast"))
    await ws.send("x" * 65)
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1009
    # A fanout.v1 session that ends itself: an unreadable frame, 4501.
    v1 = await websockets.connect(server.ws("/ws"), subprotocols=["fanout.v1"])  # type: ignore[list-item]
    await v1.send("not json")
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(v1.recv(), 10)
    assert v1.close_code == 4501
    await eventually(lambda: total_is(server, 0))
    stats = await fetch_stats(server)
    assert stats["closes"] == {"1009": 1, "4321": 1, "4501": 1}


async def test_resume_goes_on_as_a_task_would() -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[int] = loop.create_future()
    seen: list[Any] = []

    async def waits() -> None:
        seen.append(await gate)
        await asyncio.sleep(0)
        seen.append("done")

    coroutine = waits()
    task = asyncio.ensure_future(_resume(coroutine, coroutine.send(None)))
    gate.set_result(7)
    await task
    assert seen == [7, "done"]

    cancelled: list[str] = []

    async def forever() -> None:
        try:
            await loop.create_future()
        finally:
            cancelled.append("cleaned up")

    coroutine = forever()
    task = asyncio.ensure_future(_resume(coroutine, coroutine.send(None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == ["cleaned up"]
