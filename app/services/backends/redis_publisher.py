"""The publishing side of redis://: a bounded queue filled without waiting, one task emptying it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.logging_setup import LOGGER_NAME
from app.services.backends.redis_wire import (
    BINARY,
    CONNECT_TIMEOUT,
    FAILURES,
    JSON,
    PREFIX,
    TEXT,
)
from app.services.message import Message

logger = logging.getLogger(LOGGER_NAME)

PUBLISH_BATCH = 512
"""Messages sent in one pipeline (one round trip) by the publisher task."""
PUBLISH_TIMEOUT = 5.0
"""Seconds a publish round trip may take before the connection counts as broken."""


class RedisPublisher:
    """The publishing connection, its queue (at most ``queue_max`` messages) and its task.

    It does not watch the connection's health: the subscriber does, and the backend opens
    and closes this publisher's queue (``accepting``) as Redis comes and goes.
    """

    def __init__(self, url: str, origin: bytes, queue_max: int) -> None:
        self._url = url
        self._origin = origin
        self._queue_max = queue_max
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._queue_ready = asyncio.Event()
        self._client: Redis | None = None
        self.accepting = False
        """Whether Redis is up: publish() drops (counted) while it is not."""
        self.published = 0
        self.dropped = 0

    def connect(self) -> None:
        """Make the client; it connects on the first publish."""
        # The publisher may retry once: after an outage its pooled connection is dead, and the
        # first publish must reconnect rather than drop. Outages are the subscriber's to see.
        self._client = Redis.from_url(
            self._url,
            socket_timeout=PUBLISH_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=CONNECT_TIMEOUT,
        )

    async def close(self) -> None:
        """Close the connection (the task is the caller's to have stopped first)."""
        if self._client is not None:
            with contextlib.suppress(*FAILURES):
                await self._client.aclose()

    def publish(self, channel: str, message: Message) -> None:
        """Queue ``message`` for Redis; never waits. Dropped (counted) while Redis is down or
        the queue is full: local subscribers have it already, other hosts miss it."""
        if not self.accepting or len(self._queue) >= self._queue_max:
            self.dropped += 1
            return
        kind = BINARY if message.text is None else JSON if message.is_json else TEXT
        self._queue.append((PREFIX + channel.encode(), self._origin + kind + message.data))
        self._queue_ready.set()

    def stop_accepting(self) -> None:
        """Redis is gone: refuse new messages and drop the queued ones."""
        self.accepting = False
        # Whatever waits to be published now will not be: count it, as publish() would.
        self.dropped += len(self._queue)
        self._queue.clear()

    async def run(self) -> None:
        """The publisher task: send what publish() queued, a pipeline at a time."""
        while True:
            await self._queue_ready.wait()
            self._queue_ready.clear()
            while self._queue:
                await self._send_batch()

    async def flush(self) -> None:
        """Publish what is queued (a last heartbeat, a goodbye) before stopping; bounded."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while self._queue:
                    await self._send_batch()

    async def _send_batch(self) -> None:
        assert self._client is not None
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(PUBLISH_BATCH, len(queue)))]
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, payload in batch:
                    pipe.publish(channel, payload)
                await pipe.execute()
            self.published += len(batch)
        except FAILURES as exc:
            self.dropped += len(batch)
            logger.warning(
                "redis backend: %d message(s) not published: %s: %s",
                len(batch),
                type(exc).__name__,
                exc,
            )
