"""The one place Fanout reaches below ASGI, into the server's protocol and transport.

ASGI gives an application no way to abort a socket whose peer has stopped reading:
uvicorn's ``send`` waits while the write buffer is full, and ``transport.close()``
waits for that buffer to flush, so a client that never reads would hold its
connection (and uvicorn's shutdown) forever. uvicorn's WebSocket protocols hand the
application a bound ``send`` method of an object whose ``transport`` is the asyncio
transport; where that holds, Fanout keeps a handle to it and can abort. Where it does
not (another ASGI server, a wrapped ``send``), everything still works through ASGI,
only without the forced abort.

The same handle gives the broadcast fast path (:class:`DirectWriter`): already framed
bytes written straight to the transport of uvicorn's default WebSocket protocol
(websockets-sansio, tested with uvicorn 0.54), skipping the per-connection ASGI
``send``, frame building and UTF-8 encoding. Any other protocol (``--ws wsproto``,
``--ws websockets``, another ASGI server) or a future uvicorn without the attributes
used here gets the plain ASGI path.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, Protocol, cast

from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.extensions.permessage_deflate import PerMessageDeflate

SCOPE_KEY = "fanout.server_protocol"
RECEIVE_KEY = "fanout.receive"
"""The server's own ``receive``, set by FanoutApp: the session loop awaits it without
Starlette's wrapper coroutine, one frame (~0.5 KB) less per idle socket."""


class AbortableTransport(Protocol):
    """What Fanout uses of an asyncio transport."""

    def abort(self) -> None: ...

    def is_closing(self) -> bool: ...

    def get_write_buffer_size(self) -> int: ...


class TransportProbeMiddleware:
    """ASGI middleware that records the server's transport in the WebSocket scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SCOPE_KEY] = getattr(send, "__self__", None)
        await self.app(scope, receive, send)


def transport_of(scope: Scope) -> AbortableTransport | None:
    """The transport behind this connection's server protocol, or None where it is hidden."""
    transport = getattr(scope.get(SCOPE_KEY), "transport", None)
    needed = ("abort", "is_closing", "get_write_buffer_size")
    if transport is None or not all(callable(getattr(transport, n, None)) for n in needed):
        return None
    return cast(AbortableTransport, transport)


class DirectWriter:
    """Writes prepared frames to a uvicorn websockets-sansio connection's transport.

    Safe because that protocol writes every frame it produces (pings, pongs, close) with
    one ``transport.write`` and never fragments outgoing messages, so whole frames from
    here interleave with its own at frame boundaries. Frames are sent without
    compression: RFC 7692 lets a sender leave any message uncompressed (RSV1 clear),
    also on connections that negotiated permessage-deflate, and skipping the deflate
    context leaves the protocol's own compressor state untouched.
    """

    __slots__ = ("_protocol", "_transport", "_writable")

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._transport: asyncio.WriteTransport = protocol.transport
        self._writable: asyncio.Event = protocol.writable

    def can_write(self) -> bool:
        """True while the socket is open and its buffer is under the high-water mark."""
        return (
            self._writable.is_set()
            and not self._protocol.close_sent
            and not self._transport.is_closing()
        )

    def is_open(self) -> bool:
        """True until a close frame was sent or the transport started closing."""
        return not self._protocol.close_sent and not self._transport.is_closing()

    def write(self, data: bytes) -> None:
        """Queue ``data`` on the transport; never waits."""
        self._transport.write(data)

    async def wait_writable(self) -> None:
        """Wait until the transport's buffer drained below its low-water mark."""
        await self._writable.wait()


_DIRECT_ATTRIBUTES = ("transport", "writable", "close_sent", "conn", "handshake_complete")


def direct_writer(scope: Scope) -> DirectWriter | None:
    """A :class:`DirectWriter` for this connection, or None where the fast path is unsafe."""
    protocol = scope.get(SCOPE_KEY)
    if protocol is None or type(protocol).__name__ != "WebSocketsSansIOProtocol":
        return None
    if not all(hasattr(protocol, name) for name in _DIRECT_ATTRIBUTES):
        return None
    if not isinstance(protocol.writable, asyncio.Event):
        return None
    return DirectWriter(protocol)


def mark_denial_sent(scope: Scope) -> None:
    """Tell uvicorn's websockets-sansio protocol that a denial response ended the handshake.

    Without this, uvicorn 0.54 logs "ASGI callable returned without completing handshake"
    at ERROR after every HTTP denial response (uvicorn pull request 3138 fixes it the same
    way); the wsproto and legacy websockets protocols already set the flag themselves.
    """
    protocol = scope.get(SCOPE_KEY)
    if getattr(protocol, "initial_response", None) is not None and hasattr(
        protocol, "handshake_complete"
    ):
        protocol.handshake_complete = True  # type: ignore[union-attr]


# -- Per-connection memory: what uvicorn 0.54's websockets-sansio protocol keeps -------------
# Measured with tracemalloc on idle sockets (docs/benchmarks.md): these three trims take
# about 8 KB off each connection, and the compressor one about 30 KB off each connection
# that negotiated permessage-deflate (every browser). Each checks the protocol's type and
# the attributes it touches, and does nothing on any other server or version.

_SANSIO = "WebSocketsSansIOProtocol"


class _ReceiveQueue:
    """What uvicorn's websockets-sansio protocol uses of ``asyncio.Queue``, for one reader.

    ``put_nowait``, ``get``, ``get_nowait`` and ``empty`` on a list and at most one
    waiting future, where an ``asyncio.Queue`` holds four deques of 760 bytes each.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> Any:
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("one reader at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _ListEvent(asyncio.Event):
    """``asyncio.Event`` with its waiters in a list (56 bytes) instead of a deque (760)."""

    def __init__(self) -> None:
        super().__init__()
        # wait() appends and removes, set() iterates: a list does all three.
        self._waiters = []  # type: ignore[assignment]


def slim_protocol(scope: Scope) -> None:
    """Give uvicorn's protocol a lighter receive queue and writable event (about 4 KB).

    Call before the handshake is accepted, while nothing waits on either.
    """
    protocol: Any = scope.get(SCOPE_KEY)
    if type(protocol).__name__ != _SANSIO:
        return
    queue = getattr(protocol, "queue", None)
    if type(queue) is asyncio.Queue and not getattr(queue, "_getters", True):
        slim = _ReceiveQueue()
        while not queue.empty():
            slim.put_nowait(queue.get_nowait())
        protocol.queue = slim
    writable = getattr(protocol, "writable", None)
    if type(writable) is asyncio.Event and not getattr(writable, "_waiters", True):
        event = _ListEvent()
        if writable.is_set():
            event.set()
        protocol.writable = event


def release_handshake(scope: Scope, *, direct: bool) -> None:
    """Drop what uvicorn keeps of a completed handshake, and an unused compressor.

    uvicorn keeps the parsed upgrade request and the 101 response, headers included, for
    the socket's whole life (about 4 KB); nothing reads them once the handshake is done.
    On the direct path no data frame goes through the protocol's permessage-deflate
    compressor, so its zlib state (about 30 KB at uvicorn's settings) is only built if
    something ever does compress.
    """
    protocol: Any = scope.get(SCOPE_KEY)
    if type(protocol).__name__ != _SANSIO or getattr(protocol, "handshake_complete", 0) is not True:
        return
    for name in ("request", "response"):
        headers = getattr(getattr(protocol, name, None), "headers", None)
        clear = getattr(headers, "clear", None)
        if callable(clear):
            clear()
    scope["headers"] = []  # the app's copy, read (if at all) before accept()
    if direct:
        for extension in getattr(getattr(protocol, "conn", None), "extensions", ()):
            if isinstance(extension, PerMessageDeflate) and "encoder" in vars(extension):
                extension.encoder = _LazyCompressor(extension)  # type: ignore[assignment]


class _LazyCompressor:
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
        return bytes(self._real().compress(data))

    def flush(self, mode: int = zlib.Z_FINISH) -> bytes:
        return bytes(self._real().flush(mode))
