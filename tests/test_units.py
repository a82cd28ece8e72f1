"""Small unit tests: settings parsing, the outbox policy, encoding once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.config import Settings, SettingsError
from app.services.backends.memory import MemoryBackend
from app.services.broadcast import BroadcastService
from app.services.connection import Connection, Cork, OutboxLimits
from app.services.counters import Counters
from app.services.message import Message


class FakeSocket:
    """Records what a Connection sends; ``block`` makes sends wait like a full buffer."""

    def __init__(self) -> None:
        self.client = None
        self.sent: list[dict[str, Any]] = []
        self.block = asyncio.Event()
        self.block.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self.block.wait()
        self.sent.append(message)


def test_settings_from_env_parses_and_validates() -> None:
    s = Settings.from_env({"FANOUT_MAX_CONNECTIONS": "5", "FANOUT_GC_FREEZE": "off"})
    assert s.max_connections == 5
    assert s.gc_freeze is False
    assert Settings.from_env({}).max_message_bytes == 1_048_576
    with pytest.raises(SettingsError, match="FANOUT_OUTBOX_MAX_BYTES"):
        Settings.from_env({"FANOUT_OUTBOX_MAX_BYTES": "0"})
    with pytest.raises(SettingsError, match="FANOUT_CLOSE_TIMEOUT"):
        Settings.from_env({"FANOUT_CLOSE_TIMEOUT": "soon"})


def _connection(
    sock: FakeSocket, counters: Counters, overflows: list[int], **limits: Any
) -> Connection:
    return Connection(
        conn_id=1,
        endpoint="broadcast",
        channel="default",
        peer="test",
        websocket=sock,  # type: ignore[arg-type]
        transport=None,
        limits=OutboxLimits(
            max_messages=limits.get("max_messages", 4),
            max_bytes=limits.get("max_bytes", 1000),
            close_timeout=0.1,
        ),
        counters=counters,
        on_overflow=lambda conn, dropped: overflows.append(dropped),
    )


async def test_offer_never_waits_and_overflow_closes_with_4008() -> None:
    sock, counters, overflows = FakeSocket(), Counters(), []  # type: ignore[var-annotated]
    conn = _connection(sock, counters, overflows)
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
    sock, counters, overflows = FakeSocket(), Counters(), []  # type: ignore[var-annotated]
    conn = _connection(sock, counters, overflows, max_messages=100, max_bytes=100)
    assert conn.offer(Message.from_bytes(b"x" * 500))  # alone in the outbox: fits
    assert not conn.offer(Message.from_bytes(b"y"))
    assert overflows == [2]
    await conn.finish()


async def test_broadcast_encodes_once_and_shares_the_bytes() -> None:
    service = BroadcastService(Settings(stats_log_interval=0), MemoryBackend())
    await service.start()
    socks = [FakeSocket() for _ in range(50)]
    conns = [
        service.connect(s, endpoint="broadcast", channel="default", transport=None)  # type: ignore[arg-type]
        for s in socks
    ]
    message = Message.from_text("héllo")
    service.publish("default", message)
    # Every outbox holds the very same object: no per-receiver copy or encoding.
    assert all(c._queue[0] is message for c in conns)
    for c in conns:
        c.start()
    await asyncio.sleep(0.01)
    assert all(s.sent == [{"type": "websocket.send", "text": "héllo"}] for s in socks)
    assert all(s.sent[0]["text"] is message.text for s in socks)
    assert service.counters.delivered == 50
    for c in conns:
        await service.disconnect(c, 1000)
    await service.stop()


class FakeDirect:
    """Stands in for uvicorn's transport on the direct path."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.open = True

    def can_write(self) -> bool:
        return self.open and self.writable.is_set()

    def is_open(self) -> bool:
        return self.open

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def wait_writable(self) -> None:
        await self.writable.wait()


def _direct_connection(direct: FakeDirect, counters: Counters, overflows: list[int]) -> Connection:
    return Connection(
        conn_id=2,
        endpoint="broadcast",
        channel="default",
        peer="test",
        websocket=FakeSocket(),  # type: ignore[arg-type]
        transport=None,
        direct=direct,  # type: ignore[arg-type]
        cork=Cork(),
        limits=OutboxLimits(max_messages=4, max_bytes=10_000, close_timeout=0.1),
        counters=counters,
        on_overflow=lambda conn, dropped: overflows.append(dropped),
    )


async def test_direct_path_corks_one_loop_turn_into_one_write() -> None:
    direct, counters, overflows = FakeDirect(), Counters(), []  # type: ignore[var-annotated]
    conn = _direct_connection(direct, counters, overflows)
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
    direct, counters, overflows = FakeDirect(), Counters(), []  # type: ignore[var-annotated]
    conn = _direct_connection(direct, counters, overflows)
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


def test_lazy_compressor_compresses_exactly_like_the_real_one() -> None:
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.frames import Frame, Opcode

    from app.services.server_transport import _LazyCompressor

    def server_side() -> PerMessageDeflate:
        return PerMessageDeflate(False, False, 12, 12, {"memLevel": 5})

    eager, lazy = server_side(), server_side()
    lazy.encoder = _LazyCompressor(lazy)  # type: ignore[assignment]
    client = PerMessageDeflate(False, False, 12, 12)
    for payload in [b"hello " * 100, b"", bytes(range(256)) * 40]:
        a = eager.encode(Frame(Opcode.TEXT, payload))
        b = lazy.encode(Frame(Opcode.TEXT, payload))
        assert a.data == b.data and b.rsv1
        assert client.decode(b).data == payload


async def test_slim_receive_queue_keeps_order_and_wakes_its_reader() -> None:
    from app.services.server_transport import _ReceiveQueue

    queue = _ReceiveQueue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert await queue.get() == 1
    assert queue.get_nowait() == 2
    assert queue.empty()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await queue.get()  # one reader at a time, as uvicorn uses it
    queue.put_nowait(3)
    assert await reader == 3
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


def test_gc_monitor_times_collections_until_stopped() -> None:
    import gc

    from app.services.gc_monitor import GcMonitor

    monitor = GcMonitor()
    monitor.start()
    gc.collect()
    gc.collect(0)
    snap = monitor.snapshot()
    assert snap["gen2"]["collections"] >= 1
    assert snap["gen0"]["collections"] >= 1
    assert snap["gen2"]["longest_ms"] >= 0
    monitor.stop()
    assert monitor._on_gc not in gc.callbacks
    gc.collect()
    assert monitor.snapshot()["gen2"]["collections"] == snap["gen2"]["collections"]
