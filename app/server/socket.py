"""ServerSocket: the one place Fanout reaches below ASGI, into the server's protocol.

ASGI gives an application no way to abort a socket whose peer has stopped reading:
uvicorn's ``send`` waits while the write buffer is full, and ``transport.close()``
waits for that buffer to flush, so a client that never reads would hold its
connection (and uvicorn's shutdown) forever. uvicorn's WebSocket protocols hand the
application a bound ``send`` method of an object whose ``transport`` is the asyncio
transport; where that holds, Fanout keeps a handle to it and can abort. Where it does
not (another ASGI server, a wrapped ``send``), everything still works through ASGI,
only without the forced abort.

The same handle gives the broadcast fast path (:class:`~app.server.direct.DirectWriter`)
and the per-connection memory trims (:mod:`app.server.trims`) on uvicorn's default
WebSocket protocol (websockets-sansio). Tested with uvicorn 0.54 (the version pyproject.toml
pins); moving the pin means re-checking this package and nothing else. Any other protocol
(``--ws wsproto``, ``--ws websockets``), another ASGI server (hypercorn) or a uvicorn without
the attributes used here gets the plain ASGI path, which the test suite runs too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.server import trims
from app.server.conformance import allow_close_mid_message
from app.server.direct import DirectWriter, direct_writer_for

_PROTOCOL_KEY = "fanout.server_protocol"
"""Scope key: the server's protocol object behind ``send`` (None where it is hidden)."""
_LINGER_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on with a zero timeout: closing the socket sends a reset and drops its buffers."""
_RECEIVE_KEY = "fanout.receive"
"""Scope key: the server's own ``receive``, so the session loop awaits it without
Starlette's wrapper coroutine, one frame (~0.5 KB) less per idle socket."""


def probe(scope: Scope, receive: Receive, send: Send) -> None:
    """Record the server's protocol and ``receive`` in a WebSocket ``scope``."""
    scope[_PROTOCOL_KEY] = getattr(send, "__self__", None)
    scope[_RECEIVE_KEY] = receive


class ProbeMiddleware:
    """ASGI middleware that probes WebSocket scopes on Starlette's long way round."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and _PROTOCOL_KEY not in scope:
            probe(scope, receive, send)
        await self.app(scope, receive, send)


class ServerSocket:
    """One WebSocket connection as the server holds it, for the few things ASGI can't do.

    The session calls, in this order: :meth:`before_accept` (memory trims that must happen
    while nothing waits on the protocol), :meth:`direct_writer` (the fast path, or None),
    the ASGI accept, then :meth:`after_accept`. A refused handshake calls
    :meth:`denial_sent` instead. :meth:`abort` ends a socket whose peer stopped reading.
    """

    __slots__ = ("_protocol",)

    def __init__(self, scope: Scope) -> None:
        self._protocol: Any = scope.get(_PROTOCOL_KEY)

    @staticmethod
    def receive_of(scope: Scope, fallback: Receive) -> Receive:
        """The server's own ``receive`` where it was probed, else ``fallback``."""
        receive: Receive = scope.get(_RECEIVE_KEY, fallback)
        return receive

    def before_accept(self) -> None:
        """Trim the protocol's receive queue and writable event, and let a close frame end
        an unfinished fragmented message cleanly (uvicorn sansio only)."""
        trims.slim_protocol(self._protocol)
        allow_close_mid_message(self._protocol)

    def direct_writer(self) -> DirectWriter | None:
        """The direct write path for this socket, or None where it is unsafe."""
        return direct_writer_for(self._protocol)

    def after_accept(self, scope: Scope, *, direct: bool) -> None:
        """Drop what the server keeps of the finished handshake (and an unused compressor)."""
        trims.release_handshake(self._protocol, direct=direct)
        scope["headers"] = []  # the app's copy, read (if at all) before accept()

    def accept_now(self, subprotocol: str | None) -> bool:
        """Accept the handshake at once, without the ASGI ``websocket.connect`` and
        ``websocket.accept`` messages, where the server's protocol offers it (Fanout's, for
        a plain handshake it answers itself); False elsewhere, and nothing was done."""
        accept = getattr(self._protocol, "accept_now", None)
        return bool(accept(subprotocol)) if accept is not None else False

    def take_events(self, on_event: Callable[[Any], None]) -> Send | None:
        """Have the server hand each event of this accepted socket to ``on_event`` (the
        session then needs no task while it waits) and return the server's own ``send``;
        None where the server's protocol does not offer it (the session loops on
        ``receive``). Only Fanout's WebSocket protocol does (:mod:`app.server.websocket`)."""
        take = getattr(self._protocol, "take_events", None)
        if take is None:
            return None
        take(on_event)
        send: Send = self._protocol.send
        return send

    def run_ending(self, ending: Coroutine[Any, Any, None]) -> None:
        """Run the last steps of a session that took its events (:meth:`take_events`) as
        the connection's task, which the server owns and waits for at shutdown."""
        self._protocol.run_ending(ending)

    def denial_sent(self) -> None:
        """Tell uvicorn's websockets-sansio protocol that a denial response ended the handshake.

        Without this, uvicorn 0.54 logs "ASGI callable returned without completing handshake"
        at ERROR after every HTTP denial response (uvicorn pull request 3138 fixes it the same
        way); the wsproto and legacy websockets protocols already set the flag themselves.
        """
        protocol = self._protocol
        if getattr(protocol, "initial_response", None) is not None and hasattr(
            protocol, "handshake_complete"
        ):
            protocol.handshake_complete = True

    @property
    def can_abort(self) -> bool:
        """Whether :meth:`abort` reaches a transport here."""
        return callable(getattr(getattr(self._protocol, "transport", None), "abort", None))

    def abort(self) -> None:
        """Drop the connection at once with a TCP reset (no-op where the transport is hidden).

        A plain abort closes the file descriptor, but with unsent data in the kernel's send
        buffer (a peer that stopped reading) the kernel keeps the orphaned socket, and its
        buffer, retrying for minutes, and the peer is never told. With ``SO_LINGER`` 0 the
        close sends a reset at once and frees the buffer (nginx's
        ``reset_timedout_connection``).
        """
        transport: Any = getattr(self._protocol, "transport", None)
        abort = getattr(transport, "abort", None)
        if not callable(abort):
            return
        sock = transport.get_extra_info("socket")
        # fileno() is -1 once the transport has closed its socket: nothing left to reset.
        if sock is not None and sock.fileno() >= 0:
            with contextlib.suppress(OSError, ValueError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        abort()

    def abort_later(self, delay: float) -> None:
        """:meth:`abort` in ``delay`` seconds: the peer's time to finish the close handshake.

        Not for a transport already closing with nothing left to write (the client closed
        and had its close echoed, the usual end): it is gone, and a timer would keep this
        socket's objects for ``delay`` seconds for nothing.
        """
        if not self.can_abort:
            return
        transport = self._protocol.transport
        if transport.is_closing() and not transport.get_write_buffer_size():
            return
        asyncio.get_running_loop().call_later(delay, self.abort)
