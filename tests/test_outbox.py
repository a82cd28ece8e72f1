"""Connection: the bounded outbox, the slow-consumer policy and the lifecycle states."""

from __future__ import annotations

import asyncio

from app.services.connection import State
from app.services.counters import Counters
from app.services.message import Message
from tests.support.fakes import FakeSocket, Overflows, asgi_connection


async def test_offer_never_waits_and_overflow_closes_with_4008() -> None:
    sock, counters, overflows = FakeSocket(), Counters(), Overflows()
    conn = asgi_connection(sock, counters, overflows)
    conn.start()
    sock.block.clear()  # the client stops reading: every send now waits
    assert conn.offer(Message.from_text("first"))
    await asyncio.sleep(0.01)  # the writer takes it and blocks in send
    for i in range(4):
        assert conn.offer(Message.from_text(f"queued {i}"))
    assert conn.pending == 4
    assert not conn.offer(Message.from_text("one too many"))  # returns at once
    assert overflows == [5]
    assert conn.closing and conn.close_code == 4008
    assert not conn.offer(Message.from_text("after close"))
    sock.block.set()
    await conn.finish()
    assert sock.sent[-1] == {"type": "websocket.close", "code": 4008, "reason": "slow consumer"}


async def test_byte_bound_counts_too_but_one_large_message_always_fits() -> None:
    sock, counters, overflows = FakeSocket(), Counters(), Overflows()
    conn = asgi_connection(sock, counters, overflows, max_messages=100, max_bytes=100)
    assert conn.offer(Message.from_bytes(b"x" * 500))  # alone in the outbox: fits
    assert not conn.offer(Message.from_bytes(b"y"))
    assert overflows == [2]
    await conn.finish()


async def test_a_connection_moves_from_connecting_to_closed_and_never_back() -> None:
    sock, counters, overflows = FakeSocket(), Counters(), Overflows()
    conn = asgi_connection(sock, counters, overflows)
    seen = [conn.state]
    assert conn.offer(Message.from_text("early"))  # queued until the handshake completes
    assert sock.sent == []
    conn.start()
    seen.append(conn.state)
    await asyncio.sleep(0.01)
    assert sock.sent == [{"type": "websocket.send", "text": "early"}]
    conn.close(1000, "bye")
    seen.append(conn.state)
    conn.start()  # too late to open again
    seen.append(conn.state)
    await conn.finish()
    seen.append(conn.state)
    assert seen == [State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSING, State.CLOSED]
    assert not conn.offer(Message.from_text("late"))
    assert sock.sent[-1] == {"type": "websocket.close", "code": 1000, "reason": "bye"}
    assert counters.delivered == 1


async def test_a_connection_closed_before_its_handshake_never_starts_a_writer() -> None:
    sock, counters, overflows = FakeSocket(), Counters(), Overflows()
    conn = asgi_connection(sock, counters, overflows)
    conn.offer(Message.from_text("never sent"))
    conn.close(1001)
    conn.start()
    await conn.finish()
    assert [m["type"] for m in sock.sent] == ["websocket.close"]
