"""Several hosts over Redis Pub/Sub (redis-py's asyncio client).

Each worker holds two Redis connections: one subscribed (one SUBSCRIBE per channel that has
a local subscriber, plus the control channel; :mod:`.redis_subscriber`), one publishing
(:mod:`.redis_publisher`). The channel names and payload layout are in :mod:`.redis_wire`.

When either connection fails, or hangs (no answer within FANOUT_REDIS_TIMEOUT: the
subscriber pings a quiet connection, the publisher's writes have that timeout), the backend
reports ``down`` (so do /healthz and /stats), drops what is published meanwhile (counted;
local delivery is unaffected) and reconnects with exponential backoff up to
FANOUT_REDIS_RECONNECT_MAX seconds. When it is the subscription that was lost, local
subscribers are told messages may be missing (``backend_down``), and told again once
resubscribed (``backend_reconnected``), since the outage may have hidden messages.

Every payload carries a sequence number (:mod:`.redis_wire`), so cross-host delivery is
exactly once whatever is written twice, and a message lost on the way (dropped by its
publisher, unconfirmed during a hang) is noticed by the receivers: that channel's
subscribers get a gap notice (``backend_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.logging_setup import LOGGER_NAME
from app.services.backends.base import CONTROL_CHANNEL, Deliver, Gap
from app.services.backends.redis_publisher import RedisPublisher
from app.services.backends.redis_subscriber import RedisSubscriber
from app.services.backends.redis_wire import ORIGIN_BYTES
from app.services.message import Message

logger = logging.getLogger(LOGGER_NAME)

FIRST_CONNECT_WAIT = 2.0
"""Seconds start() waits for the first subscription before serving anyway (degraded)."""
LOG_EVERY = 10.0
"""Seconds between two log lines about the same kind of event (duplicates, lost messages)."""


class EventLog:
    """One log line for the first of a run of like events, then at most one per LOG_EVERY
    seconds with how many there were since: a flood of duplicates is a line, not a line each.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._since_line = 0
        self._line_at = -LOG_EVERY

    def __call__(self, detail: str) -> None:
        self._since_line += 1
        now = time.monotonic()
        if now - self._line_at >= LOG_EVERY:
            logger.warning(
                "redis backend: %s (%d since the last such line; latest: %s)",
                self._what,
                self._since_line,
                detail,
            )
            self._line_at = now
            self._since_line = 0


class RedisBackend:
    """Backend for several hosts sharing one Redis; see the module documentation.

    The two connections are their own classes, :class:`RedisPublisher` and
    :class:`RedisSubscriber`; this one implements the Backend protocol over them, owns their
    tasks, and turns the connections' ups and downs, and the losses and duplicates the
    subscriber sees, into status, counters, log lines and gap notices.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        publish_queue: int = 10_000,
        reconnect_max: float = 2.0,
        timeout: float = 2.0,
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
        self._publisher = RedisPublisher(
            url,
            origin,
            publish_queue,
            timeout=timeout,
            reconnect_max=reconnect_max,
            failed=self._publisher_failed,
            recovered=self._publisher_recovered,
        )
        self._subscriber = RedisSubscriber(
            url,
            origin,
            reconnect_max,
            self._went_up,
            self._went_down,
            timeout=timeout,
            lost=self._lost,
            duplicate=self._duplicate,
            refused=self._refused,
        )
        self._gap: Gap | None = None
        self._up = asyncio.Event()
        """Subscribed and publishing; mirrored in the publisher's ``accepting``."""
        self._subscribed = False
        self._was_subscribed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._log_duplicate = EventLog("dropped duplicate message(s) (a write sent twice)")
        self._log_lost = EventLog("messages from another worker never arrived; gap notice sent")
        self._log_refused = EventLog("refused payload(s) of an unknown kind (another version?)")
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
        """``up`` while subscribed and publishing, ``down`` while reconnecting; counters."""
        subscriber, publisher = self._subscriber, self._publisher
        return {
            "name": self.name,
            "status": "up" if self._up.is_set() else "down",
            "url": self.display_url,
            "outages": self.outages,
            "published": publisher.published,
            "received": subscriber.received,
            "publish_dropped": publisher.dropped,
            "publish_failures": publisher.failures,
            "publish_resent": publisher.resent,
            "health_check_failures": subscriber.health_check_failures,
            "duplicates_dropped": subscriber.tracker.duplicates,
            "gaps_detected": subscriber.tracker.gaps,
            "payload_refused": subscriber.refused,
            "last_error": self.last_error,
        }

    # -- health ----------------------------------------------------------------------------

    def _went_up(self) -> None:
        """The subscriber is subscribed (again)."""
        self._subscribed = True
        if self._was_subscribed:
            logger.warning("redis backend: %s back, resubscribed", self.display_url)
            self._tell("backend_reconnected")
        else:
            logger.info("redis backend: subscribed at %s", self.display_url)
        self._was_subscribed = True
        self._update()

    def _went_down(self, exc: BaseException) -> None:
        """The subscription connection failed or hung."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self._subscribed:
            logger.debug("redis backend: still unreachable: %s", self.last_error)
            return
        self._subscribed = False
        logger.error(
            "redis backend: lost subscription at %s (%s); reconnecting",
            self.display_url,
            self.last_error,
        )
        self._update()
        self._tell("backend_down")

    def _publisher_failed(self, exc: BaseException) -> None:
        """A write failed or took longer than the timeout."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.error(
            "redis backend: publishing at %s failed (%s); reconnecting",
            self.display_url,
            self.last_error,
        )
        self._update()

    def _publisher_recovered(self) -> None:
        logger.warning("redis backend: publishing at %s again", self.display_url)
        self._update()

    def _update(self) -> None:
        """Status is up while both connections are; the publisher's queue is open only then."""
        up = self._subscribed and self._publisher.healthy
        if up == self._up.is_set():
            return
        if up:
            self._up.set()
            self._publisher.accepting = True
            self.last_error = None
        else:
            self._up.clear()
            self.outages += 1
            self._publisher.stop_accepting()

    def _tell(self, reason: str, channel: str | None = None) -> None:
        assert self._gap is not None
        self._gap(reason, channel)

    def _lost(self, channel: str) -> None:
        """A message on ``channel`` follows messages from its origin that never came."""
        self._log_lost(f"channel {channel!r}")
        if channel != CONTROL_CHANNEL:  # heartbeats: the next one replaces what was lost
            self._tell("backend_lost", channel)

    def _duplicate(self, channel: str) -> None:
        self._log_duplicate(f"channel {channel!r}")

    def _refused(self, kind: bytes) -> None:
        self._log_refused(f"kind byte {kind!r}")
