"""The subscribing side of redis://: one SUBSCRIBE per wanted channel, read on one task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.logging_setup import LOGGER_NAME
from app.services.backends.base import CONTROL_CHANNEL, Deliver
from app.services.backends.redis_wire import (
    CONNECT_TIMEOUT,
    FAILURES,
    JSON,
    ORIGIN_BYTES,
    PREFIX,
    TEXT,
)
from app.services.message import Message

logger = logging.getLogger(LOGGER_NAME)

BACKOFF_START = 0.1


class RedisSubscriber:
    """The subscription connection, the channels wanted on it, and its reader task.

    The reader is also the backend's health check: it calls ``went_up`` once subscribed and
    ``went_down`` when the connection fails, then reconnects with exponential backoff (up to
    ``reconnect_max`` seconds) and subscribes again to everything wanted.
    """

    def __init__(
        self,
        url: str,
        origin: bytes,
        reconnect_max: float,
        went_up: Callable[[], None],
        went_down: Callable[[BaseException], None],
    ) -> None:
        self._url = url
        self._origin = origin
        self._reconnect_max = reconnect_max
        self._went_up = went_up
        self._went_down = went_down
        self._wanted: set[str] = {CONTROL_CHANNEL}
        """Fanout channels this worker should be subscribed to."""
        self._subscribed: set[str] = set()
        """Fanout channels the current subscription connection is subscribed to."""
        self._sub_changed = asyncio.Event()
        self._client: Redis | None = None
        self.received = 0

    def connect(self) -> None:
        """Make the client; the reader task connects it."""
        # No retries inside redis-py: a lost connection must surface here, so that the
        # outage is reported and the subscribers told, not papered over by a silent retry.
        self._client = Redis.from_url(
            self._url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=CONNECT_TIMEOUT
        )

    async def close(self) -> None:
        """Close the connection (the task is the caller's to have stopped first)."""
        if self._client is not None:
            with contextlib.suppress(*FAILURES):
                await self._client.aclose()

    def subscribe(self, channel: str) -> None:
        """Subscribe in Redis (on the reader task) to a channel with a first subscriber."""
        self._wanted.add(channel)
        self._sub_changed.set()

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe in Redis from a channel whose last local subscriber left."""
        self._wanted.discard(channel)
        self._sub_changed.set()

    async def run(self, deliver: Deliver) -> None:
        """The subscriber task: (re)subscribe, read until the connection fails, back off."""
        backoff = BACKOFF_START
        while True:
            assert self._client is not None
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            syncer: asyncio.Task[None] | None = None
            try:
                self._subscribed = set(self._wanted)
                await pubsub.subscribe(*(PREFIX + c.encode() for c in self._subscribed))
                self._went_up()
                backoff = BACKOFF_START
                # Subscription changes go out on their own task; this one only reads.
                syncer = asyncio.create_task(self._sync(pubsub), name="fanout-redis-sync")
                await self._listen(pubsub, deliver)
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

    async def _listen(self, pubsub: PubSub, deliver: Deliver) -> None:
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
                if kind == TEXT:
                    message = Message.from_utf8(data)
                elif kind == JSON:
                    message = Message.from_json(data)
                else:
                    message = Message.from_bytes(data)
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
