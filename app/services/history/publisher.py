"""OrderedPublisher: one socket's publications on history channels, numbered in the order
the socket sent them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from app.logging_setup import LOGGER_NAME
from app.services.history.service import HistoryService
from app.services.history.store import HistoryUnavailable, Position, Retention
from app.services.message import Message

logger = logging.getLogger(LOGGER_NAME)

QUEUE_MAX = 1024
"""Publications of one socket waiting for the store; past it the socket is too fast for it."""

Done = Callable[[Position | None], None]
"""Told the publication's position, or None when the store could not be reached."""


class OrderedPublisher:
    """Appends one socket's publications to the history store one after another.

    The store may serve several appends at once (a Redis connection pool), so appends sent
    concurrently could be numbered in any order; one publisher's messages must arrive in
    the order sent, so each socket's wait in one bounded queue, served by one task.
    """

    __slots__ = ("_history", "_queue", "_task")

    def __init__(self, history: HistoryService) -> None:
        self._history = history
        self._queue: asyncio.Queue[tuple[str, Message, Retention, Done | None]] = asyncio.Queue(
            QUEUE_MAX
        )
        self._task: asyncio.Task[None] | None = None

    def offer(
        self, channel: str, message: Message, retention: Retention, done: Done | None = None
    ) -> bool:
        """Queue a publication; False when the socket has too many waiting already."""
        try:
            self._queue.put_nowait((channel, message, retention, done))
        except asyncio.QueueFull:
            return False
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fanout-history-publisher")
        return True

    async def aclose(self) -> None:
        """Stop: what still waits is not published."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            channel, message, retention, done = await self._queue.get()
            try:
                position: Position | None = await self._history.publish(channel, message, retention)
            except HistoryUnavailable as exc:
                logger.warning("history of %s unavailable, publication refused: %s", channel, exc)
                position = None
            if done is not None:
                done(position)
