"""Several hosts over Redis Pub/Sub (redis-py's asyncio client).

Each worker holds two Redis connections: one subscribed (one SUBSCRIBE per channel that has
a local subscriber, plus the control channel; :mod:`.redis_subscriber`), one publishing
(:mod:`.redis_publisher`). The channel names and payload layout are in :mod:`.redis_wire`.

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
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.logging_setup import LOGGER_NAME
from app.services.backends.base import Deliver, Gap
from app.services.backends.redis_publisher import RedisPublisher
from app.services.backends.redis_subscriber import RedisSubscriber
from app.services.backends.redis_wire import ORIGIN_BYTES
from app.services.message import Message

logger = logging.getLogger(LOGGER_NAME)

FIRST_CONNECT_WAIT = 2.0
"""Seconds start() waits for the first subscription before serving anyway (degraded)."""


class RedisBackend:
    """Backend for several hosts sharing one Redis; see the module documentation.

    The two connections are their own classes, :class:`RedisPublisher` and
    :class:`RedisSubscriber`; this one implements the Backend protocol over them, owns their
    tasks, and turns the subscriber's ups and downs into status, log lines and gap notices.
    """

    name = "redis"

    def __init__(
        self, url: str, *, publish_queue: int = 10_000, reconnect_max: float = 2.0
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {url!r}")
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self.display_url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        """The URL without credentials, for /stats and logs."""
        origin = os.urandom(ORIGIN_BYTES)
        self._publisher = RedisPublisher(url, origin, publish_queue)
        self._subscriber = RedisSubscriber(
            url, origin, reconnect_max, self._went_up, self._went_down
        )
        self._gap: Gap | None = None
        self._up = asyncio.Event()
        """Subscribed; mirrored in the publisher's ``accepting``."""
        self._was_up = False
        self._tasks: list[asyncio.Task[None]] = []
        self.outages = 0
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, deliver: Deliver, gap: Gap) -> None:
        """Start subscribing and publishing; wait briefly for the first subscription."""
        self._gap = gap
        self._subscriber.connect()
        self._publisher.connect()
        self._tasks = [
            asyncio.create_task(self._subscriber.run(deliver), name="fanout-redis-subscriber"),
            asyncio.create_task(self._publisher.run(), name="fanout-redis-publisher"),
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
            await self._publisher.flush()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._subscriber.close()
        await self._publisher.close()
        self._up.clear()
        self._publisher.accepting = False

    # -- messages --------------------------------------------------------------------------

    def publish(self, channel: str, message: Message) -> None:
        """Queue ``message`` for Redis; never waits (see :meth:`RedisPublisher.publish`)."""
        self._publisher.publish(channel, message)

    def subscribe(self, channel: str) -> None:
        """Subscribe in Redis (on the subscriber task) to a channel with a first subscriber."""
        self._subscriber.subscribe(channel)

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe in Redis from a channel whose last local subscriber left."""
        self._subscriber.unsubscribe(channel)

    def status(self) -> dict[str, Any]:
        """``up`` while subscribed, ``down`` while reconnecting; counters for /stats."""
        return {
            "name": self.name,
            "status": "up" if self._up.is_set() else "down",
            "url": self.display_url,
            "outages": self.outages,
            "published": self._publisher.published,
            "received": self._subscriber.received,
            "publish_dropped": self._publisher.dropped,
            "last_error": self.last_error,
        }

    # -- health ----------------------------------------------------------------------------

    def _went_up(self) -> None:
        self._up.set()
        self._publisher.accepting = True
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
        self._publisher.stop_accepting()
        logger.error("redis backend: lost %s (%s); reconnecting", self.display_url, self.last_error)
        assert self._gap is not None
        self._gap("backend_down")
