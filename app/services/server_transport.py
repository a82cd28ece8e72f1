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
from typing import Any, Protocol, cast

from starlette.types import ASGIApp, Receive, Scope, Send

SCOPE_KEY = "fanout.server_protocol"


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
