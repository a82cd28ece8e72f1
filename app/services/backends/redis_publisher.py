"""The publishing side of redis://: a bounded queue filled without waiting, one task emptying it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.logging_setup import LOGGER_NAME
from app.services.backends.redis_wire import (
    BINARY,
    EVENT,
    FAILURES,
    JSON,
    PREFIX,
    SEQUENCE,
    STAMPED,
    TEXT,
)
from app.services.message import Message, stamp_payload

logger = logging.getLogger(LOGGER_NAME)

PUBLISH_BATCH = 512
"""Messages sent in one pipeline (one round trip) by the publisher task."""
CHANNELS_MAX = 65_536
"""Channels whose last ``seq`` the publisher remembers (for ``prev``); the table is cleared
beyond it, and each channel's next message then says ``prev`` 0 (unknown)."""
BACKOFF_START = 0.1


class RedisPublisher:
    """The publishing connection, its queue (at most ``queue_max`` messages) and its task.

    Every message gets its sequence number in :meth:`publish`, whether it is sent or
    dropped, so the other hosts see a dropped one as a gap (see :mod:`.redis_wire`).

    A write that takes longer than ``timeout`` seconds (Redis stopped, a network black
    hole) or fails marks the connection broken: ``failed`` is called at once, and the task
    pings Redis with exponential backoff (up to ``reconnect_max`` seconds) until it
    answers, then calls ``recovered`` and sends the unconfirmed batch once more. That batch
    may have reached Redis the first time: the receivers drop what they had already. The
    backend opens and closes the queue (``accepting``) as Redis comes and goes.
    """

    def __init__(
        self,
        url: str,
        origin: bytes,
        queue_max: int,
        *,
        timeout: float = 2.0,
        reconnect_max: float = 2.0,
        failed: Callable[[BaseException], None] = lambda exc: None,
        recovered: Callable[[], None] = lambda: None,
    ) -> None:
        self._url = url
        self._queue_max = queue_max
        self._timeout = timeout
        self._reconnect_max = reconnect_max
        self._failed = failed
        self._recovered = recovered
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._queue_ready = asyncio.Event()
        self._client: Redis | None = None
        self._head_text = origin + TEXT
        self._head_binary = origin + BINARY
        self._head_json = origin + JSON
        self._head_event = origin + EVENT
        self._head_stamped = origin + STAMPED
        self._seq = 0
        """The last sequence number given to a message."""
        self._last_seq: dict[str, int] = {}
        """Per channel, the sequence number of the last message published on it."""
        self._unconfirmed: list[tuple[bytes, bytes]] = []
        """The batch whose write failed: sent once more when Redis answers again."""
        self.healthy = True
        """False from a failed write until Redis answers a ping again."""
        self.accepting = False
        """Whether Redis is up: publish() drops (counted) while it is not."""
        self.published = 0
        self.dropped = 0
        self.resent = 0
        self.failures = 0

    def connect(self) -> None:
        """Make the client; it connects on the first publish."""
        # No retries inside redis-py: a write that times out is seen here at once (a hang is
        # noticed within the timeout), and this class decides what is sent again.
        self._client = Redis.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
        )

    async def close(self) -> None:
        """Close the connection (the task is the caller's to have stopped first)."""
        if self._client is not None:
            with contextlib.suppress(*FAILURES):
                await self._client.aclose()

    def publish(self, channel: str, message: Message) -> None:
        """Number ``message`` and queue it for Redis; never waits. Dropped (counted) while
        Redis is down or the queue is full: local subscribers have it already, other hosts
        miss it and are told so by the next message's numbers."""
        seq = self._seq = self._seq + 1
        last_seq = self._last_seq
        prev = last_seq.get(channel, 0)
        if not prev and len(last_seq) >= CHANNELS_MAX:
            last_seq.clear()
        last_seq[channel] = seq
        if not self.accepting or len(self._queue) >= self._queue_max:
            self.dropped += 1
            return
        if message.offset is not None:
            self._queue.append(
                (
                    PREFIX + channel.encode(),
                    self._head_stamped + SEQUENCE.pack(seq, prev) + stamp_payload(message),
                )
            )
            self._queue_ready.set()
            return
        if message.text is None:
            head = self._head_binary
        elif message.is_json:
            head = self._head_json
        elif message.is_event:
            head = self._head_event
        else:
            head = self._head_text
        self._queue.append(
            (PREFIX + channel.encode(), head + SEQUENCE.pack(seq, prev) + message.data)
        )
        self._queue_ready.set()

    def stop_accepting(self) -> None:
        """Redis is gone: refuse new messages and drop the queued ones."""
        self.accepting = False
        # Whatever waits to be published now will not be: count it, as publish() would.
        self.dropped += len(self._queue)
        self._queue.clear()

    async def run(self) -> None:
        """The publisher task: send what publish() queued, a pipeline at a time; after a
        failed write, wait for Redis to answer and send the unconfirmed batch again."""
        while True:
            if not self.healthy:
                await self._recover()
                continue
            await self._queue_ready.wait()
            self._queue_ready.clear()
            while self._queue and self.healthy:
                await self._send_batch()

    async def flush(self) -> None:
        """Publish what is queued (a last heartbeat, a goodbye) before stopping; bounded."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while self._queue and self.healthy:
                    await self._send_batch()

    async def _send_batch(self) -> None:
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(PUBLISH_BATCH, len(queue)))]
        if not await self._send(batch):
            self._unconfirmed = batch

    async def _send(self, batch: list[tuple[bytes, bytes]]) -> bool:
        """One pipeline; False (and the connection marked broken) when it fails."""
        assert self._client is not None
        for attempt in (1, 2):
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
                break
            except FAILURES as exc:
                # A connection found closed (Redis restarted since it was opened) is tried
                # once more on a new one; a timeout is not: a hang must be seen at once.
                if attempt == 1 and not isinstance(exc, TimeoutError | RedisTimeoutError):
                    continue
                self.healthy = False
                self.failures += 1
                self._failed(exc)
                return False
        self.published += len(batch)
        return True

    async def _recover(self) -> None:
        """Ping with exponential backoff until Redis answers; then resend the failed batch."""
        assert self._client is not None
        backoff = BACKOFF_START
        while True:
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._reconnect_max)
            try:
                async with asyncio.timeout(self._timeout * 2):
                    await self._client.ping()
                break
            except FAILURES:
                continue
        self.healthy = True
        self._recovered()
        batch, self._unconfirmed = self._unconfirmed, []
        if batch:
            # Maybe the first write went through: the receivers drop what they have.
            if await self._send(batch):
                self.resent += len(batch)
            else:
                self.dropped += len(batch)
                logger.warning("redis backend: %d unconfirmed message(s) not published", len(batch))
