"""Connection: one client's bounded outbox, its lifecycle, and the slow-consumer policy.

The write path lives in the subclasses: :class:`~app.services.direct_connection.DirectConnection`
(prepared frames corked into one transport write per loop turn) and
:class:`~app.services.asgi_connection.AsgiConnection` (a writer task sending through ASGI).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from starlette.types import Scope
from starlette.websockets import WebSocketDisconnect

from app.server.socket import ServerSocket
from app.services.close_codes import CloseCode
from app.services.counters import Counters
from app.services.message import Message

SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)
"""What sending to a client that has gone can raise through Starlette and uvicorn."""

AsgiSend = Callable[[Any], Awaitable[None]]
"""Starlette's ``WebSocket.send``: one ASGI message out."""


class State(IntEnum):
    """Where a connection is in its life; only ever moves forward."""

    CONNECTING = 0
    """Registered, handshake not yet complete: offers queue up."""
    OPEN = 1
    """Delivering."""
    CLOSING = 2
    """Decided to close (or the socket went): offers are refused, the outbox is empty."""
    CLOSED = 3
    """The session ended; nothing of the connection runs any more."""


# Module constants: reading ``State.X`` goes through the enum class (about 50 ns in
# Python 3.11), and the checks below run once per message per subscriber.
CONNECTING = State.CONNECTING
OPEN = State.OPEN
CLOSING = State.CLOSING
CLOSED = State.CLOSED


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    """How much may wait for one client before it is closed as a slow consumer."""

    max_messages: int
    max_bytes: int
    close_timeout: float


class Connection:
    """A connected client as the fan-out sees it.

    ``offer`` never waits: it appends to a bounded outbox and lets the write path know.
    When the outbox would exceed its bounds the client is a slow consumer: what waits for
    it is dropped, ``on_overflow`` is told, and the client is closed with
    :attr:`CloseCode.SLOW_CONSUMER`, so no other client ever waits for it.
    """

    __slots__ = (
        "_closer",
        "_counters",
        "_limits",
        "_max_bytes",
        "_max_messages",
        "_on_overflow",
        "_queue",
        "_queued_bytes",
        "_send",
        "_socket",
        "channel",
        "close_code",
        "endpoint",
        "id",
        "peer",
        "state",
    )

    path: ClassVar[str]
    """How messages reach the socket: 'direct' (prepared frames) or 'asgi'."""

    def __init__(
        self,
        *,
        conn_id: int,
        endpoint: str,
        channel: str | None,
        peer: str,
        send: AsgiSend,
        socket: ServerSocket,
        limits: OutboxLimits,
        counters: Counters,
        on_overflow: Callable[[Connection, int], None],
    ) -> None:
        self.id = conn_id
        self.endpoint = endpoint
        self.channel = channel
        self.peer = peer
        self.state = CONNECTING
        self._send = send
        self._socket = socket
        self._limits = limits
        self._max_messages = limits.max_messages
        self._max_bytes = limits.max_bytes
        self._counters = counters
        self._on_overflow = on_overflow
        # A list, not a deque: an idle connection's outbox is empty, and an empty list is
        # 56 bytes where an empty deque is 760; clear() hands the list's buffer back.
        self._queue: list[Message] = []
        self._queued_bytes = 0
        self._closer: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        """The code this side closed with, once it has decided to close."""

    @property
    def socket(self) -> ServerSocket:
        """The server's side of this connection (:class:`~app.server.socket.ServerSocket`)."""
        return self._socket

    @property
    def closing(self) -> bool:
        """True once the connection has started to close; offers are then ignored."""
        return self.state >= CLOSING

    @property
    def pending(self) -> int:
        """Messages waiting in the outbox."""
        return len(self._queue)

    def send_through(self, send: AsgiSend) -> None:
        """Send the close through ``send`` from now on (the server's own, after a session
        handed its events to a callback)."""
        self._send = send

    def accepted(self, scope: Scope) -> None:
        """The handshake completed: trim what the server keeps of it, start delivering."""
        self._socket.after_accept(scope, direct=self.path == "direct")
        self.start()

    def start(self) -> None:
        """Start delivering; call once the WebSocket handshake is complete."""
        if self.state is CONNECTING:
            self.state = OPEN
            self._opened()

    def offer(self, message: Message) -> bool:
        """Queue ``message`` for this client without waiting; False if it was not queued."""
        if self.state >= CLOSING:
            return False
        queue = self._queue
        size = message.size
        if queue:
            # Something already waits, so the write path is on its way for it.
            if len(queue) >= self._max_messages or self._queued_bytes + size > self._max_bytes:
                self._overflow()
                return False
            queue.append(message)
            self._queued_bytes += size
            return True
        # The first message always fits, however large: the size limit bounds it already.
        queue.append(message)
        self._queued_bytes = size
        self._first_queued()
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Begin closing with ``code``; returns at once, :meth:`finish` awaits the end."""
        if self.state >= CLOSING:
            return
        self.state = CLOSING
        self.close_code = code
        self._discard_queue()
        self._stop_writing()
        self._closer = asyncio.create_task(
            self._send_close(code, reason), name=f"fanout-closer-{self.id}"
        )

    async def finish(self) -> None:
        """Stop writing, wait for a pending close, and bound the socket's remaining life.

        Called once when the client's session ends, whatever ended it.
        """
        if self.state < CLOSING:
            self.state = CLOSING
        self._discard_queue()
        tasks = [t for t in (*self._write_tasks(), self._closer) if t is not None]
        self._stop_writing()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.state = CLOSED
        # The peer has close_timeout to take the close handshake; then the socket goes.
        self._socket.abort_later(self._limits.close_timeout)

    # -- what a write path provides ---------------------------------------------------------

    def _opened(self) -> None:
        """The handshake completed: begin delivering what queued up meanwhile."""
        raise NotImplementedError

    def _first_queued(self) -> None:
        """The outbox went from empty to one message (called by :meth:`offer`; a subclass
        that inlines its own ``offer`` for speed needs none)."""
        raise NotImplementedError

    def _stop_writing(self) -> None:
        """Cancel the write path's task, if any (it is awaited by :meth:`finish`)."""

    def _write_tasks(self) -> tuple[asyncio.Task[None] | None, ...]:
        """The write path's tasks, for :meth:`finish` to await."""
        return ()

    # -- shared machinery -------------------------------------------------------------------

    def _overflow(self) -> None:
        dropped = len(self._queue) + 1
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
        self._on_overflow(self, dropped)

    def _abandon(self) -> None:
        """The socket is gone or closing: accept nothing more and drop what waits.

        Its receive loop sees the disconnect and ends the session, which cleans up.
        """
        if self.state < CLOSING:
            self.state = CLOSING
        self._discard_queue()

    def _discard_queue(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(self._limits.close_timeout):
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except TimeoutError:
            # The write buffer never drained: the client is not reading. Abort the socket,
            # which also ends its receive loop with a disconnect.
            self._socket.abort()
        except SEND_ERRORS:
            pass
