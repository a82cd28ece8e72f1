"""Several hosts over Redis Pub/Sub (redis-py's asyncio client).

Each worker holds two Redis connections: one subscribed (one SUBSCRIBE per channel that has
a local subscriber, plus the control channel), one publishing. A Fanout channel ``name`` is
the Redis channel ``fanout:name``. A published payload is::

    origin  8 bytes: the publishing worker's random id (it skips its own messages)
    kind    1 byte:  b"t" text, b"b" binary
    data    the message bytes

When the subscription connection fails, the backend reports ``down`` (so do /healthz and
/stats), tells local subscribers messages may be missing (``backend_down``), drops what is
published meanwhile (counted; local delivery is unaffected) and reconnects with exponential
backoff up to FANOUT_REDIS_RECONNECT_MAX seconds; once resubscribed it reports ``up`` and
tells subscribers again (``backend_reconnected``), since the outage may have hidden messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.services.backends.base import CONTROL_CHANNEL, Deliver, Gap
from app.services.message import Message

logger = logging.getLogger("fanout")

PREFIX = b"fanout:"
ORIGIN_BYTES = 8
TEXT = b"t"
BINARY = b"b"
PUBLISH_BATCH = 512
"""Messages sent in one pipeline (one round trip) by the publisher task."""
CONNECT_TIMEOUT = 2.0
PUBLISH_TIMEOUT = 5.0
"""Seconds a publish round trip may take before the connection counts as broken."""
FIRST_CONNECT_WAIT = 2.0
"""Seconds start() waits for the first subscription before serving anyway (degraded)."""
BACKOFF_START = 0.1

FAILURES = (RedisError, OSError, TimeoutError)


class RedisBackend:
    """Backend for several hosts sharing one Redis; see the module documentation."""

    name = "redis"

    def __init__(
        self, url: str, *, publish_queue: int = 10_000, reconnect_max: float = 2.0
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {url!r}")
        self._url = url
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self.display_url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        """The URL without credentials, for /stats and logs."""
        self._queue_max = publish_queue
        self._reconnect_max = reconnect_max
        self._origin = os.urandom(ORIGIN_BYTES)
        self._deliver: Deliver | None = None
        self._gap: Gap | None = None
        self._wanted: set[str] = {CONTROL_CHANNEL}
        """Fanout channels this worker should be subscribed to."""
        self._subscribed: set[str] = set()
        """Fanout channels the current subscription connection is subscribed to."""
        self._sub_changed = asyncio.Event()
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._queue_ready = asyncio.Event()
        self._up = asyncio.Event()
        self._was_up = False
        self._sub_client: Redis | None = None
        self._pub_client: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.outages = 0
        self.publish_dropped = 0
        self.published = 0
        self.received = 0
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, deliver: Deliver, gap: Gap) -> None:
        """Start subscribing and publishing; wait briefly for the first subscription."""
        self._deliver = deliver
        self._gap = gap
        # No retries inside redis-py: a lost connection must surface here, so that the
        # outage is reported and the subscribers told, not papered over by a silent retry.
        options: dict[str, Any] = {
            "retry": Retry(NoBackoff(), 0),
            "socket_connect_timeout": CONNECT_TIMEOUT,
        }
        self._sub_client = Redis.from_url(self._url, **options)
        # The publisher may retry once: after an outage its pooled connection is dead, and the
        # first publish must reconnect rather than drop. Outages are the subscriber's to see.
        options["retry"] = Retry(NoBackoff(), 1)
        self._pub_client = Redis.from_url(self._url, socket_timeout=PUBLISH_TIMEOUT, **options)
        self._tasks = [
            asyncio.create_task(self._subscriber(), name="fanout-redis-subscriber"),
            asyncio.create_task(self._publisher(), name="fanout-redis-publisher"),
        ]
        # A worker serves even while Redis is away (degraded), so the server can start.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_CONNECT_WAIT):
                await self._up.wait()
        if not self._up.is_set():
            logger.warning("redis backend: %s not reachable yet; serving locally", self.display_url)

    async def stop(self) -> None:
        """Cancel both tasks, then close both connections."""
        if self._up.is_set():
            await self._flush()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for client in (self._sub_client, self._pub_client):
            if client is not None:
                with contextlib.suppress(*FAILURES):
                    await client.aclose()
        self._up.clear()

    # -- messages --------------------------------------------------------------------------

    def publish(self, channel: str, message: Message) -> None:
        """Queue ``message`` for Redis; never waits. Dropped (counted) while Redis is down or
        the queue is full: local subscribers have it already, other hosts miss it."""
        if not self._up.is_set() or len(self._queue) >= self._queue_max:
            self.publish_dropped += 1
            return
        kind = TEXT if message.is_text else BINARY
        self._queue.append((PREFIX + channel.encode(), self._origin + kind + message.data))
        self._queue_ready.set()

    def subscribe(self, channel: str) -> None:
        """Subscribe in Redis (on the subscriber task) to a channel with a first subscriber."""
        self._wanted.add(channel)
        self._sub_changed.set()

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe in Redis from a channel whose last local subscriber left."""
        self._wanted.discard(channel)
        self._sub_changed.set()

    def status(self) -> dict[str, Any]:
        """``up`` while subscribed, ``down`` while reconnecting; counters for /stats."""
        return {
            "name": self.name,
            "status": "up" if self._up.is_set() else "down",
            "url": self.display_url,
            "outages": self.outages,
            "published": self.published,
            "received": self.received,
            "publish_dropped": self.publish_dropped,
            "last_error": self.last_error,
        }

    # -- subscriber ------------------------------------------------------------------------

    async def _subscriber(self) -> None:
        backoff = BACKOFF_START
        while True:
            assert self._sub_client is not None
            pubsub = self._sub_client.pubsub(ignore_subscribe_messages=True)
            syncer: asyncio.Task[None] | None = None
            try:
                self._subscribed = set(self._wanted)
                await pubsub.subscribe(*(PREFIX + c.encode() for c in self._subscribed))
                self._went_up()
                backoff = BACKOFF_START
                # Subscription changes go out on their own task; this one only reads.
                syncer = asyncio.create_task(self._sync(pubsub), name="fanout-redis-sync")
                await self._listen(pubsub)
                raise ConnectionError("subscription ended")
            except FAILURES as exc:
                self._went_down(exc)
            finally:
                if syncer is not None:
                    syncer.cancel()
                    with contextlib.suppress(asyncio.CancelledError, *FAILURES):
                        await syncer
                with contextlib.suppress(*FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._reconnect_max)

    async def _listen(self, pubsub: PubSub) -> None:
        deliver = self._deliver
        assert deliver is not None
        origin = self._origin
        skip = len(PREFIX)
        async for item in pubsub.listen():
            if item["type"] != "message":
                continue
            payload: bytes = item["data"]
            if payload[:ORIGIN_BYTES] == origin:
                continue  # this worker's own message: its clients have it already
            kind = payload[ORIGIN_BYTES : ORIGIN_BYTES + 1]
            data = payload[ORIGIN_BYTES + 1 :]
            try:
                message = (
                    Message(data=data, text=data.decode()) if kind == TEXT else Message(data=data)
                )
            except UnicodeDecodeError:
                logger.warning("redis backend: dropping a text message that is not UTF-8")
                continue
            self.received += 1
            channel: bytes = item["channel"]
            deliver(channel[skip:].decode(), message)

    async def _sync(self, pubsub: PubSub) -> None:
        while True:
            await self._sub_changed.wait()
            self._sub_changed.clear()
            add = self._wanted - self._subscribed
            remove = self._subscribed - self._wanted
            if add:
                self._subscribed |= add
                await pubsub.subscribe(*(PREFIX + c.encode() for c in add))
            if remove:
                self._subscribed -= remove
                await pubsub.unsubscribe(*(PREFIX + c.encode() for c in remove))

    def _went_up(self) -> None:
        self._up.set()
        self.last_error = None
        if self._was_up:
            logger.warning("redis backend: %s back, resubscribed", self.display_url)
            assert self._gap is not None
            self._gap("backend_reconnected")
        else:
            logger.info("redis backend: subscribed at %s", self.display_url)
        self._was_up = True

    def _went_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self._up.is_set():
            logger.debug("redis backend: still unreachable: %s", self.last_error)
            return
        self._up.clear()
        self.outages += 1
        # Whatever waits to be published now will not be: count it, as publish() would.
        self.publish_dropped += len(self._queue)
        self._queue.clear()
        logger.error("redis backend: lost %s (%s); reconnecting", self.display_url, self.last_error)
        assert self._gap is not None
        self._gap("backend_down")

    # -- publisher -------------------------------------------------------------------------

    async def _publisher(self) -> None:
        while True:
            await self._queue_ready.wait()
            self._queue_ready.clear()
            while self._queue:
                await self._send_batch()

    async def _send_batch(self) -> None:
        assert self._pub_client is not None
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(PUBLISH_BATCH, len(queue)))]
        try:
            async with self._pub_client.pipeline(transaction=False) as pipe:
                for channel, payload in batch:
                    pipe.publish(channel, payload)
                await pipe.execute()
            self.published += len(batch)
        except FAILURES as exc:
            self.publish_dropped += len(batch)
            logger.warning(
                "redis backend: %d message(s) not published: %s: %s",
                len(batch),
                type(exc).__name__,
                exc,
            )

    async def _flush(self) -> None:
        """Publish what is queued (a last heartbeat, a goodbye) before stopping; bounded."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while self._queue:
                    await self._send_batch()
