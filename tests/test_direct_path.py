"""DirectConnection and the worker's Cork: one write per connection per loop turn."""

from __future__ import annotations

import asyncio

from app.services.counters import Counters
from app.services.message import Message
from tests.support.fakes import FakeDirect, Overflows, direct_connection


async def test_direct_path_corks_one_loop_turn_into_one_write() -> None:
    direct, counters, overflows = FakeDirect(), Counters(), Overflows()
    conn = direct_connection(direct, counters, overflows)
    before_start = Message.from_text("early")
    assert conn.offer(before_start)
    assert direct.writes == []  # nothing goes out before the handshake completes
    conn.start()
    assert direct.writes == [before_start.frame]
    messages = [Message.from_text(f"m{i}") for i in range(3)]
    for m in messages:
        assert conn.offer(m)
    assert len(direct.writes) == 1  # corked until the end of this loop turn
    await asyncio.sleep(0)
    assert direct.writes[1] == b"".join(m.frame for m in messages)
    assert counters.delivered == 4


async def test_direct_path_full_socket_drains_later_and_overflows_at_the_bound() -> None:
    direct, counters, overflows = FakeDirect(), Counters(), Overflows()
    conn = direct_connection(direct, counters, overflows)
    conn.start()
    direct.writable.clear()  # the client's socket buffer is full
    for i in range(4):
        assert conn.offer(Message.from_bytes(bytes([i])))
    await asyncio.sleep(0.01)
    assert direct.writes == [] and conn.pending == 4
    direct.writable.set()  # it read: everything queued goes out in one write
    await asyncio.sleep(0.01)
    assert direct.writes == [b"".join(Message.from_bytes(bytes([i])).frame for i in range(4))]
    direct.writable.clear()
    for _ in range(4):
        assert conn.offer(Message.from_bytes(b"x"))
    await asyncio.sleep(0.01)
    assert not conn.offer(Message.from_bytes(b"over"))  # fifth while stuck: slow consumer
    assert overflows == [5]
    assert conn.close_code == 4008
    direct.writable.set()
    await conn.finish()
    assert len(direct.writes) == 1  # nothing of the dropped outbox was written


async def test_a_socket_gone_while_frames_wait_drops_them_and_refuses_more() -> None:
    direct, counters, overflows = FakeDirect(), Counters(), Overflows()
    conn = direct_connection(direct, counters, overflows)
    conn.start()
    direct.open = False
    assert conn.offer(Message.from_text("into the void"))
    await asyncio.sleep(0)  # the cork's flush finds the socket gone
    assert conn.closing and conn.pending == 0
    assert not conn.offer(Message.from_text("after"))
    assert direct.writes == [] and overflows == []
    await conn.finish()
