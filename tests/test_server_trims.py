"""app.server.trims: the lighter stand-ins Fanout gives uvicorn's protocol."""

from __future__ import annotations

import asyncio

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from app.server.trims import LazyCompressor, ReceiveQueue


def test_lazy_compressor_compresses_exactly_like_the_real_one() -> None:
    def server_side() -> PerMessageDeflate:
        return PerMessageDeflate(False, False, 12, 12, {"memLevel": 5})

    eager, lazy = server_side(), server_side()
    lazy.encoder = LazyCompressor(lazy)  # type: ignore[assignment]
    client = PerMessageDeflate(False, False, 12, 12)
    for payload in [b"hello " * 100, b"", bytes(range(256)) * 40]:
        a = eager.encode(Frame(Opcode.TEXT, payload))
        b = lazy.encode(Frame(Opcode.TEXT, payload))
        assert a.data == b.data and b.rsv1
        assert client.decode(b).data == payload


async def test_slim_receive_queue_keeps_order_and_wakes_its_reader() -> None:
    queue = ReceiveQueue()
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
