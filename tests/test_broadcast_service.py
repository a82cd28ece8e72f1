"""BroadcastService: registry by channel, fan-out that encodes once, reports via stats."""

from __future__ import annotations

import asyncio

from app.config import Settings
from app.services.backends.memory import MemoryBackend
from app.services.message import Message
from app.services.node import Node
from tests.support.fakes import FakeSocket


async def test_broadcast_encodes_once_and_shares_the_bytes() -> None:
    node = Node(Settings(stats_log_interval=0), MemoryBackend())
    await node.start()
    service = node.broadcast
    socks = [FakeSocket() for _ in range(50)]
    conns = [
        service.connect(s, endpoint="broadcast", channel="default")  # type: ignore[arg-type]
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
    assert node.stats.counters.delivered == 50
    figures = node.figures()
    assert figures.connections.total == 50 and figures.channels == {"default": 50}
    assert figures.connections.by_path == {"asgi": 50, "direct": 0}
    assert figures.connections.by_endpoint == {"broadcast": 50, "echo": 0, "ws": 0}
    for c in conns:
        await service.disconnect(c, 1000)
    assert node.figures().closes == {"1000": 50}
    assert node.figures().channels == {}
    await node.stop()
