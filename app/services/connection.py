"""One client's bounded outbox, the writer task that drains it, and the slow-consumer policy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from app.services.close_codes import CloseCode
from app.services.counters import Counters
from app.services.message import Message
from app.services.server_transport import AbortableTransport, DirectWriter

SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)
"""What sending to a client that has gone can raise through Starlette and uvicorn."""


CORK_MAX_FRAMES = 64
"""Frames corked for one connection before they are written without waiting for the flush."""


class Cork:
    """The connections with frames corked during this event-loop turn, flushed at its end.

    One ``call_soon`` per loop turn for the whole worker, rather than one per connection:
    a fan-out to a thousand sockets then allocates nothing per socket, which matters twice,
    for the time it takes and for the garbage collector, whose full collections (tens of
    milliseconds at a thousand clients) are paced by how many objects are allocated.
    """

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Connection] = []
        self._scheduled = False

    def add(self, conn: Connection) -> None:
        """Flush ``conn`` at the end of this loop turn."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            conn.flush()


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    """How much may wait for one client before it is closed as a slow consumer."""

    max_messages: int
    max_bytes: int
    close_timeout: float


class Connection:
    """A connected client as the fan-out sees it.

    ``offer`` never waits: it appends to a bounded outbox. On the direct path the worker's
    :class:`Cork` writes the outbox in one ``transport.write`` at the end of the loop turn
    (a drain task takes over while the socket is full); on the ASGI path the connection's
    own writer task sends it message by message. When the outbox would exceed its bounds the
    client is a slow consumer: what waits for it is dropped, ``on_overflow`` is told,
    and the client is closed with :attr:`CloseCode.SLOW_CONSUMER`, so no other client
    ever waits for it.
    """

    __slots__ = (
        "_closer",
        "_closing",
        "_cork",
        "_counters",
        "_direct",
        "_direct_ready",
        "_flush_scheduled",
        "_limits",
        "_max_bytes",
        "_max_messages",
        "_on_overflow",
        "_queue",
        "_queued_bytes",
        "_transport",
        "_waiter",
        "_websocket",
        "_writer",
        "channel",
        "close_code",
        "endpoint",
        "id",
        "peer",
    )

    def __init__(
        self,
        *,
        conn_id: int,
        endpoint: str,
        channel: str | None,
        peer: str,
        websocket: WebSocket,
        transport: AbortableTransport | None,
        direct: DirectWriter | None = None,
        cork: Cork | None = None,
        limits: OutboxLimits,
        counters: Counters,
        on_overflow: Callable[[Connection, int], None],
    ) -> None:
        if direct is not None and cork is None:
            raise ValueError("the direct path needs the worker's Cork")
        self.id = conn_id
        self.endpoint = endpoint
        self.channel = channel
        self.peer = peer
        self._websocket = websocket
        self._transport = transport
        self._direct = direct
        self._cork = cork
        # Direct writes only once the handshake response is on the wire (see start()).
        self._direct_ready: DirectWriter | None = None
        self._flush_scheduled = False
        self._limits = limits
        self._max_messages = limits.max_messages
        self._max_bytes = limits.max_bytes
        self._counters = counters
        self._on_overflow = on_overflow
        # A list, not a deque: an idle connection's outbox is empty, and an empty list is
        # 56 bytes where an empty deque is 760; clear() hands the list's buffer back.
        self._queue: list[Message] = []
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closing = False
        self.close_code: int | None = None
        """The code this side closed with, once it has decided to close."""

    @property
    def closing(self) -> bool:
        """True once the connection has started to close; offers are then ignored."""
        return self._closing

    @property
    def pending(self) -> int:
        """Messages waiting in the outbox."""
        return len(self._queue)

    @property
    def path(self) -> str:
        """How messages reach the socket: 'direct' (prepared frames) or 'asgi'."""
        return "direct" if self._direct is not None else "asgi"

    def start(self) -> None:
        """Start delivering; call once the WebSocket handshake is complete.

        On the ASGI path a writer task runs for the connection's life. On the direct path
        a writer exists only while frames wait for a full socket buffer to drain.
        """
        if self._closing:
            return
        if self._direct is not None:
            self._direct_ready = self._direct
            if self._queue:
                self.flush()
        elif self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name=f"fanout-writer-{self.id}")

    def offer(self, message: Message) -> bool:
        """Queue ``message`` for this client without waiting; False if it was not queued."""
        if self._closing:
            return False
        queue = self._queue
        size = message.size
        if queue:
            # Something already waits, so a flush, drain or writer is on its way for it.
            if len(queue) >= self._max_messages or self._queued_bytes + size > self._max_bytes:
                self._overflow()
                return False
            queue.append(message)
            self._queued_bytes += size
            if len(queue) >= CORK_MAX_FRAMES and self._flush_scheduled:
                self.flush()  # many senders in one loop turn: write without waiting
            return True
        # The first message always fits, however large: the size limit bounds it already.
        queue.append(message)
        self._queued_bytes = size
        if self._direct_ready is not None:
            if not self._flush_scheduled and (self._writer is None or self._writer.done()):
                # Cork: what is offered in this loop turn goes out in one write, at its end.
                self._flush_scheduled = True
                assert self._cork is not None  # checked in __init__ for the direct path
                self._cork.add(self)
        else:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Begin closing with ``code``; returns at once, :meth:`finish` awaits the end."""
        if self._closing:
            return
        self._closing = True
        self.close_code = code
        self._discard_queue()
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(
            self._send_close(code, reason), name=f"fanout-closer-{self.id}"
        )

    async def finish(self) -> None:
        """Stop the writer, wait for a pending close, and bound the socket's remaining life.

        Called once when the client's session ends, whatever ended it.
        """
        self._closing = True
        self._discard_queue()
        tasks = [t for t in (self._writer, self._closer) if t is not None]
        if self._writer is not None:
            self._writer.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            # The peer has close_timeout to take the close handshake; then the socket goes.
            asyncio.get_running_loop().call_later(self._limits.close_timeout, self._transport.abort)

    def flush(self) -> None:
        """Write every queued frame at once, or leave them to a drain task if the socket is full."""
        self._flush_scheduled = False
        direct = self._direct_ready
        if self._closing or direct is None or not self._queue:
            return
        if not direct.can_write():
            if not direct.is_open():
                self._abandon()
            elif self._writer is None or self._writer.done():
                self._writer = asyncio.create_task(
                    self._drain_direct(), name=f"fanout-drain-{self.id}"
                )
            return
        self._write_queued(direct)

    def _write_queued(self, direct: DirectWriter) -> None:
        queue = self._queue
        if len(queue) == 1:
            direct.write(queue[0].frame)
        else:
            direct.write(b"".join([m.frame for m in queue]))
        self._counters.delivered += len(queue)
        queue.clear()
        self._queued_bytes = 0

    async def _drain_direct(self) -> None:
        """Wait for a full socket buffer to drain, then write what queued up meanwhile."""
        direct = self._direct_ready
        assert direct is not None
        while self._queue and not self._closing:
            await direct.wait_writable()
            if self._closing or not direct.is_open():
                self._abandon()
                return
            self._write_queued(direct)

    def _overflow(self) -> None:
        dropped = len(self._queue) + 1
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
        self._on_overflow(self, dropped)

    def _abandon(self) -> None:
        """The socket is gone or closing: accept nothing more and drop what waits.

        Its receive loop sees the disconnect and ends the session, which cleans up.
        """
        self._closing = True
        self._discard_queue()

    def _discard_queue(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _write_loop(self) -> None:
        queue = self._queue
        send = self._websocket.send
        counters = self._counters
        loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                if not queue:
                    self._waiter = loop.create_future()
                    await self._waiter
                    self._waiter = None
                    continue
                message = queue.pop(0)  # at most max_messages long
                self._queued_bytes -= message.size
                if message.text is not None:
                    await send({"type": "websocket.send", "text": message.text})
                else:
                    await send({"type": "websocket.send", "bytes": message.data})
                counters.delivered += 1
        except SEND_ERRORS:
            self._abandon()

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(self._limits.close_timeout):
                await self._websocket.send(
                    {"type": "websocket.close", "code": code, "reason": reason}
                )
        except TimeoutError:
            # The write buffer never drained: the client is not reading. Abort the socket,
            # which also ends its receive loop with a disconnect.
            if self._transport is not None:
                self._transport.abort()
        except SEND_ERRORS:
            pass
