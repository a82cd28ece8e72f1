"""DirectConnection: prepared frames corked into one transport write per loop turn."""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from app.server.direct import DirectWriter
from app.services.connection import CLOSING, OPEN, Connection
from app.services.latency import WriteLatency
from app.services.message import Message

CORK_MAX_FRAMES = 64
"""Frames corked for one connection before they are written without waiting for the flush."""


CORK_EAGER_BATCH = 16
"""Connections written together while a calm loop turn's message is still being offered."""


class Cork:
    """The connections with frames corked during this event-loop turn, flushed at its end.

    One ``call_soon`` per loop turn for the whole worker, rather than one per connection:
    a fan-out to a thousand sockets then allocates nothing per socket, which matters twice,
    for the time it takes and for the garbage collector, whose full collections (tens of
    milliseconds at a thousand clients) are paced by how many objects are allocated.

    Between :meth:`begin` and :meth:`end` (one message's fan-out) in a calm loop turn (the
    turn's first message, after a turn that had at most one), the corked connections are
    written every :data:`CORK_EAGER_BATCH` offers instead of at the end of the turn: the
    first subscribers need not wait for the thousandth offer. In a burst (a second message
    in the same turn, or right after a turn that had several) everything waits for the end
    of the turn, so a burst still costs one write per socket; the first message of a burst
    written early costs at most one more write per socket.

    It also times each turn for the publish-to-write histogram: from the first message
    corked in the turn (the oldest it writes, stamped once when the flush is scheduled) to
    the end of the turn's writes. One clock read at each end and one observation per turn,
    whatever the number of messages and sockets.
    """

    __slots__ = ("_burst", "_calm", "_dirty", "_eager", "_latency", "_scheduled", "_since")

    def __init__(self, latency: WriteLatency) -> None:
        self._dirty: list[DirectConnection] = []
        self._scheduled = False
        self._since = 0.0
        self._latency = latency
        self._eager = False
        self._burst = False
        self._calm = True

    def begin(self) -> None:
        """One message's fan-out starts: write as it goes if the loop turn is calm."""
        if self._scheduled:  # something is corked already: the turn's second message
            self._burst = True
            self._eager = False
        else:
            self._eager = self._calm

    def end(self) -> None:
        """The message's fan-out is over: what remains waits for the end of the turn."""
        self._eager = False

    def add(self, conn: DirectConnection) -> None:
        """Flush ``conn`` at the end of this loop turn (or sooner, see :meth:`begin`)."""
        dirty = self._dirty
        dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._since = perf_counter()
            asyncio.get_running_loop().call_soon(self._run)
        elif self._eager and len(dirty) >= CORK_EAGER_BATCH:
            self._flush()

    def _flush(self) -> None:
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            conn.flush()

    def _run(self) -> None:
        self._scheduled = False
        self._calm = not self._burst
        self._burst = False
        self._flush()
        self._latency.observe(perf_counter() - self._since)


class DirectConnection(Connection):
    """A connection whose frames go straight to uvicorn's transport (the fast path).

    What is offered during one loop turn is written with one ``transport.write`` at its end
    by the worker's :class:`Cork`; while the socket's buffer is full a drain task waits for
    it and writes what queued up meanwhile. No task exists for an idle connection.
    """

    __slots__ = ("_cork", "_direct", "_drain", "_flush_scheduled")

    path = "direct"

    def __init__(self, *, direct: DirectWriter, cork: Cork, **common: Any) -> None:
        super().__init__(**common)
        self._direct = direct
        self._cork = cork
        self._flush_scheduled = False
        self._drain: asyncio.Task[None] | None = None

    def offer(self, message: Message) -> bool:
        """Queue ``message`` without waiting; it goes out with this loop turn's write.

        :meth:`Connection.offer` with the cork inlined instead of a call to
        ``_first_queued``: this runs once per message per subscriber, and the call cost
        about 10 % of a delivery (measured; see docs/architecture.md).
        """
        if self.state >= CLOSING:
            return False
        queue = self._queue
        size = message.size
        if queue:
            # Something already waits, so a flush or drain is on its way for it.
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
        if self.state is OPEN and not self._flush_scheduled:
            drain = self._drain
            if drain is None or drain.done():
                # Cork: what is offered in this loop turn goes out in one write, at its end.
                self._flush_scheduled = True
                self._cork.add(self)
        return True

    def flush(self) -> None:
        """Write every queued frame at once, or leave them to a drain task if the socket is full."""
        self._flush_scheduled = False
        if self.state is not OPEN or not self._queue:
            return
        direct = self._direct
        if not direct.can_write():
            if not direct.is_open():
                self._abandon()
            elif self._drain is None or self._drain.done():
                self._drain = asyncio.create_task(
                    self._drain_later(), name=f"fanout-drain-{self.id}"
                )
            return
        self._write_queued()

    def _opened(self) -> None:
        if self._queue:
            self.flush()

    def _stop_writing(self) -> None:
        if self._drain is not None:
            self._drain.cancel()

    def _write_tasks(self) -> tuple[asyncio.Task[None] | None, ...]:
        return (self._drain,)

    def _write_queued(self) -> None:
        queue = self._queue
        if len(queue) == 1:
            self._direct.write(queue[0].frame)
        else:
            self._direct.write(b"".join([m.frame for m in queue]))
        self._counters.delivered += len(queue)
        queue.clear()
        self._queued_bytes = 0

    async def _drain_later(self) -> None:
        """Wait for a full socket buffer to drain, then write what queued up meanwhile."""
        direct = self._direct
        while self._queue and self.state is OPEN:
            await direct.wait_writable()
            if self.state is not OPEN or not direct.is_open():
                self._abandon()
                return
            self._write_queued()
