"""Per-connection memory: what uvicorn 0.54's websockets-sansio protocol keeps, trimmed.

Measured with tracemalloc on idle sockets (docs/benchmarks.md): the receive-queue, event and
handshake trims take about 8 KB off each connection, and the compressor one about 30 KB off
each connection that negotiated permessage-deflate (every browser). Each checks the
protocol's type and the attributes it touches, and does nothing on any other server or
version. Only :class:`app.server.socket.ServerSocket` calls these.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any

from websockets.extensions.permessage_deflate import PerMessageDeflate

SANSIO = "WebSocketsSansIOProtocol"
"""Class name of uvicorn's default WebSocket protocol, the one these trims know."""
SANSIO_NAMES = (SANSIO, "FanoutWebSocketProtocol")
"""That protocol and Fanout's subclass of it (:mod:`app.server.websocket`)."""


def is_sansio(protocol: Any) -> bool:
    """Whether ``protocol`` is uvicorn's websockets-sansio protocol (or Fanout's subclass)."""
    return type(protocol).__name__ in SANSIO_NAMES


class ReceiveQueue:
    """What uvicorn's websockets-sansio protocol uses of ``asyncio.Queue``, for one reader.

    ``put_nowait``, ``get``, ``get_nowait`` and ``empty`` on a list and at most one
    waiting future, where an ``asyncio.Queue`` holds four deques of 760 bytes each.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        """True when nothing waits to be read."""
        return not self._items

    def qsize(self) -> int:
        """Items waiting to be read."""
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        """Append ``item`` and wake the reader."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Any:
        """The oldest item; ``asyncio.QueueEmpty`` if there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    def arrival(self) -> asyncio.Future[None]:
        """A future done when an item is put (the one reader awaits it while empty)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            raise RuntimeError("one reader at a time")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    async def get(self) -> Any:
        """The oldest item, waiting for one if needed (one reader at a time)."""
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("one reader at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class EventCallback:
    """Stands in for the receive queue once a session takes its events by callback: what
    the protocol would queue for ``receive`` is handed to the callback at once."""

    __slots__ = ("_on_event",)

    def __init__(self, on_event: Callable[[Any], None]) -> None:
        self._on_event = on_event

    def empty(self) -> bool:
        """Always: nothing waits for a ``receive``."""
        return True

    def qsize(self) -> int:
        """Always 0."""
        return 0

    def put_nowait(self, item: Any) -> None:
        """Hand ``item`` (an ASGI receive event) to the callback."""
        self._on_event(item)

    def get_nowait(self) -> Any:
        """Never anything: the events went to the callback."""
        raise asyncio.QueueEmpty

    def arrival(self) -> asyncio.Future[None]:
        """Refused: a session fed by callbacks does not ``receive``."""
        raise RuntimeError("this socket's events go to a callback")


class ListEvent(asyncio.Event):
    """``asyncio.Event`` with its waiters in a list (56 bytes) instead of a deque (760)."""

    def __init__(self) -> None:
        super().__init__()
        # wait() appends and removes, set() iterates: a list does all three.
        self._waiters = []  # type: ignore[assignment]


def slim_protocol(protocol: Any) -> None:
    """Give uvicorn's protocol a lighter receive queue and writable event (about 4 KB).

    Call before the handshake is accepted, while nothing waits on either.
    """
    if not is_sansio(protocol):
        return
    queue = getattr(protocol, "queue", None)
    if type(queue) is asyncio.Queue and not getattr(queue, "_getters", True):
        slim = ReceiveQueue()
        while not queue.empty():
            slim.put_nowait(queue.get_nowait())
        protocol.queue = slim
    writable = getattr(protocol, "writable", None)
    if type(writable) is asyncio.Event and not getattr(writable, "_waiters", True):
        event = ListEvent()
        if writable.is_set():
            event.set()
        protocol.writable = event


def release_handshake(protocol: Any, *, direct: bool) -> None:
    """Drop what uvicorn keeps of a completed handshake, and an unused compressor.

    uvicorn keeps the parsed upgrade request and the 101 response, headers included, for
    the socket's whole life (about 4 KB); nothing reads them once the handshake is done.
    On the direct path no data frame goes through the protocol's permessage-deflate
    compressor, so its zlib state (about 30 KB at uvicorn's settings) is only built if
    something ever does compress.
    """
    if not is_sansio(protocol) or getattr(protocol, "handshake_complete", 0) is not True:
        return
    for name in ("request", "response"):
        headers = getattr(getattr(protocol, name, None), "headers", None)
        clear = getattr(headers, "clear", None)
        if callable(clear):
            clear()
    if direct:
        for extension in getattr(getattr(protocol, "conn", None), "extensions", ()):
            if isinstance(extension, PerMessageDeflate) and "encoder" in vars(extension):
                extension.encoder = LazyCompressor(extension)  # type: ignore[assignment]


class LazyCompressor:
    """Stands in for a permessage-deflate compressor until something compresses."""

    __slots__ = ("_compressor", "_extension")

    def __init__(self, extension: PerMessageDeflate) -> None:
        self._extension = extension
        self._compressor: Any = None

    def _real(self) -> Any:
        if self._compressor is None:
            ext = self._extension
            # The same parameters websockets uses when it builds the compressor itself.
            self._compressor = zlib.compressobj(
                wbits=-ext.local_max_window_bits, **ext.compress_settings
            )
        return self._compressor

    def compress(self, data: bytes) -> bytes:
        """Compress like the real compressor, building it on first use."""
        return bytes(self._real().compress(data))

    def flush(self, mode: int = zlib.Z_FINISH) -> bytes:
        """Flush like the real compressor, building it on first use."""
        return bytes(self._real().flush(mode))
