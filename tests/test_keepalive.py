"""Keepalive pings on the server's shared deadline queues (app/server/keepalive.py).

A socket that answers pings stays open and keeps being pinged; one that does not is
closed with 1011 after ``--ws-ping-interval`` plus ``--ws-ping-timeout``, as uvicorn does.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from app.server.keepalive import DeadlineQueue
from tests.support.rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawClient
from tests.support.servers import StartServer

ARGS = ["--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.4"]
WITHIN = 15.0
"""Generous bound for what is due within a second."""


async def test_a_socket_that_answers_is_pinged_again_and_stays_open(
    start_server: StartServer,
) -> None:
    server = start_server(args=ARGS)
    client = await RawClient.open(server.port, "/ws/echo")
    pings = 0
    async with asyncio.timeout(WITHIN):
        while pings < 4:
            frame = await client.recv_frame()
            assert frame.opcode == OP_PING
            pings += 1
            await client.send(OP_PONG, frame.payload)
    await client.send(OP_TEXT, b"still here")
    async with asyncio.timeout(WITHIN):
        frame = await client.recv_frame()
        while frame.opcode == OP_PING:
            await client.send(OP_PONG, frame.payload)
            frame = await client.recv_frame()
    assert frame.payload == b"still here"
    await client.close()


async def test_a_socket_that_never_answers_a_ping_is_closed_with_1011(
    start_server: StartServer,
) -> None:
    server = start_server(args=ARGS)
    client = await RawClient.open(server.port, "/ws/broadcast")
    async with asyncio.timeout(WITHIN):
        frames, close = await client.recv_until_close()
    assert [f.opcode for f in frames] == [OP_PING]
    assert close is not None and close.opcode == OP_CLOSE and close.close_code == 1011
    await client.close()


async def test_deadlines_fire_in_order_and_cancelled_ones_do_not() -> None:
    fired: list[str] = []
    queue = DeadlineQueue(fired.append)
    loop = asyncio.get_running_loop()
    queue.add(loop, 0.01, "a")
    queue.add(loop, 0.01, "b").cancel()
    queue.add(loop, 0.02, "c")
    await asyncio.sleep(0.3)
    assert fired == ["a", "c"]
    assert len(queue) == 0
    queue.add(loop, 10, "d")
    queue.close()
    assert len(queue) == 0


async def test_deadlines_cancelled_through_the_queue_leave_it_from_the_back() -> None:
    # A head deadline is cancelled moments after it was added: its entry, and any cancelled
    # ones it uncovers, leave the queue then instead of staying for the whole delay.
    fired: list[str] = []
    queue = DeadlineQueue(fired.append)
    loop = asyncio.get_running_loop()
    _a, b, c = (queue.add(loop, 0.05, owner) for owner in "abc")
    queue.cancel(b)
    assert len(queue) == 3, "b is not at the back: it waits for its turn"
    queue.cancel(c)
    assert len(queue) == 1, "c goes, and so does b, cancelled behind it"
    await asyncio.sleep(0.3)
    assert fired == ["a"]
    d = queue.add(loop, 10, "d")
    queue.cancel(d)
    assert len(queue) == 0
    queue.close()


@pytest.mark.parametrize("delay", [0.0, 0.05])
async def test_a_deadline_added_while_firing_waits_for_its_own_time(delay: float) -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []

    def again(owner: str) -> None:
        fired.append(loop.time())
        if len(fired) < 3:
            queue.add(loop, 0.1, owner)

    queue = DeadlineQueue(again)
    start = loop.time()
    queue.add(loop, delay, "x")
    await asyncio.sleep(1.0)
    assert len(fired) == 3
    # Each re-armed deadline came at least 0.1 s minus the granularity after the last.
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(fired))
    assert fired[0] >= start + delay - 0.05
