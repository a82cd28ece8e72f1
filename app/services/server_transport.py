"""The one place Fanout reaches below ASGI, to the socket transport of the server.

ASGI gives an application no way to abort a socket whose peer has stopped reading:
uvicorn's ``send`` waits while the write buffer is full, and ``transport.close()``
waits for that buffer to flush, so a client that never reads would hold its
connection (and uvicorn's shutdown) forever. uvicorn's WebSocket protocols hand the
application a bound ``send`` method of an object whose ``transport`` is the asyncio
transport; where that holds, Fanout keeps a handle to it and can abort. Where it does
not (another ASGI server, a wrapped ``send``), everything still works through ASGI,
only without the forced abort.
"""

from __future__ import annotations

from typing import Protocol, cast

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
