"""AsgiConnection: messages sent one by one through the ASGI ``send`` by a writer task."""

from __future__ import annotations

import asyncio
from typing import Any

from app.services.connection import OPEN, SEND_ERRORS, Connection


class AsgiConnection(Connection):
    """A connection on any ASGI server: its writer task drains the outbox through ``send``.

    The fallback wherever the direct path is unsafe (``--ws wsproto``, hypercorn, or
    FANOUT_DIRECT_WRITES=false). The writer runs for the connection's whole life and sleeps
    on a future while the outbox is empty.
    """

    __slots__ = ("_waiter", "_writer")

    path = "asgi"

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    def _opened(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"fanout-writer-{self.id}")

    def _first_queued(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_writing(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    def _write_tasks(self) -> tuple[asyncio.Task[None] | None, ...]:
        return (self._writer,)

    async def _write_loop(self) -> None:
        queue = self._queue
        send = self._send
        counters = self._counters
        loop = asyncio.get_running_loop()
        try:
            while self.state is OPEN:
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
