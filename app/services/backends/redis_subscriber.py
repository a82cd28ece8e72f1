"""The subscribing side of redis://: one SUBSCRIBE per wanted channel, read on one task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.logging_setup import LOGGER_NAME
from app.services.backends.base import CONTROL_CHANNEL, Deliver
from app.services.backends.redis_sequence import AFTER_GAP, DUPLICATE, SequenceTracker
from app.services.backends.redis_wire import (
    BINARY,
    BINARY_V1,
    EVENT,
    FAILURES,
    HEADER_BYTES,
    JSON,
    JSON_V1,
    ORIGIN_BYTES,
    PREFIX,
    SEQUENCE,
    STAMPED,
    TEXT,
    TEXT_V1,
)
from app.services.message import Message, from_stamp_payload

logger = logging.getLogger(LOGGER_NAME)

BACKOFF_START = 0.1


class RedisHung(TimeoutError):
    """Redis said nothing, not even to a ping, for the health-check timeout."""


class RedisSubscriber:
    """The subscription connection, the channels wanted on it, and its reader task.

    The reader is also the backend's health check. It calls ``went_up`` once Redis confirms
    the subscription and ``went_down`` when the connection fails or hangs: whenever the
    connection has been silent for half of ``timeout`` seconds a watchdog sends a PING, and
    when nothing at all (no message, no answer) has come for ``timeout`` seconds the
    connection counts as lost. It then reconnects with exponential backoff (up to
    ``reconnect_max`` seconds) and subscribes again to everything wanted.

    Sequenced payloads go through a :class:`SequenceTracker`: duplicates are dropped,
    and ``lost(channel)`` is called before a message that follows lost ones.
    """

    def __init__(
        self,
        url: str,
        origin: bytes,
        reconnect_max: float,
        went_up: Callable[[], None],
        went_down: Callable[[BaseException], None],
        *,
        timeout: float = 2.0,
        lost: Callable[[str], None] = lambda channel: None,
        duplicate: Callable[[str], None] = lambda channel: None,
        refused: Callable[[bytes], None] = lambda kind: None,
    ) -> None:
        self._url = url
        self._origin = origin
        self._reconnect_max = reconnect_max
        self._went_up = went_up
        self._went_down = went_down
        self._timeout = timeout
        self._lost = lost
        self._duplicate = duplicate
        self._refused = refused
        self._wanted: set[str] = {CONTROL_CHANNEL}
        """Fanout channels this worker should be subscribed to."""
        self._subscribed: set[str] = set()
        """Fanout channels the current subscription connection is subscribed to."""
        self._sub_changed = asyncio.Event()
        self._client: Redis | None = None
        self._heard = 0
        """Replies read on the current connection (messages, confirmations, pongs)."""
        self.tracker = SequenceTracker()
        self.received = 0
        self.refused = 0
        self.health_check_failures = 0

    def connect(self) -> None:
        """Make the client; the reader task connects it."""
        # No retries inside redis-py: a lost connection must surface here, so that the
        # outage is reported and the subscribers told, not papered over by a silent retry.
        # The socket timeout bounds the connect handshake and every write; reads wait for
        # messages without one, and the watchdog below bounds the silence.
        self._client = Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
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
            pubsub = self._client.pubsub()
            confirmed = False
            try:
                self._heard = 0
                self._subscribed = set(self._wanted)
                await pubsub.subscribe(*(PREFIX + c.encode() for c in self._subscribed))
                self.tracker.retain({PREFIX + c.encode() for c in self._subscribed})
                # Reads, subscription changes and the watchdog: the first to fail ends all.
                async with asyncio.TaskGroup() as tasks:
                    reader = tasks.create_task(self._listen(pubsub, deliver))
                    tasks.create_task(self._sync(pubsub), name="fanout-redis-sync")
                    tasks.create_task(self._watch(pubsub), name="fanout-redis-watchdog")
                    await reader
                    raise ConnectionError("subscription ended")
            except* FAILURES as failed:
                confirmed = self._heard > 0
                self._went_down(failed.exceptions[0])
            finally:
                with contextlib.suppress(*FAILURES):
                    # Any: aclose() is untyped before redis-py 8.2 and typed since, and CI installs
                    # the newest release.
                    await cast(Any, pubsub).aclose()
            if confirmed:
                backoff = BACKOFF_START
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._reconnect_max)

    async def _listen(self, pubsub: PubSub, deliver: Deliver) -> None:
        origin = self._origin
        skip = len(PREFIX)
        check = self.tracker.check
        unpack = SEQUENCE.unpack_from
        up = False
        async for item in pubsub.listen():
            self._heard += 1
            kind_of_item = item["type"]
            if kind_of_item != "message":
                if kind_of_item == "subscribe" and not up:
                    up = True  # Redis answers on this connection: subscribed
                    self.tracker.resync()  # the went_up notice covers what was missed
                    self._went_up()
                elif kind_of_item == "unsubscribe":
                    self.tracker.forget(item["channel"])
                continue
            payload: bytes = item["data"]
            if payload[:ORIGIN_BYTES] == origin:
                continue  # this worker's own message: its clients have it already
            channel: bytes = item["channel"]
            kind = payload[ORIGIN_BYTES : ORIGIN_BYTES + 1]
            if kind in (TEXT, BINARY, JSON, STAMPED, EVENT):
                seq, prev = unpack(payload, ORIGIN_BYTES + 1)
                verdict = check(channel, payload[:ORIGIN_BYTES], seq, prev)
                if verdict == DUPLICATE:
                    self._duplicate(channel[skip:].decode())
                    continue
                if verdict == AFTER_GAP:
                    self._lost(channel[skip:].decode())
                data = payload[HEADER_BYTES:]
            elif kind in (TEXT_V1, BINARY_V1, JSON_V1):
                data = payload[ORIGIN_BYTES + 1 :]
            else:
                self.refused += 1
                self._refused(kind)
                continue
            try:
                if kind == STAMPED:
                    message = from_stamp_payload(data)
                elif kind in (TEXT, TEXT_V1):
                    message = Message.from_utf8(data)
                elif kind in (JSON, JSON_V1):
                    message = Message.from_json(data)
                elif kind == EVENT:
                    message = Message.event(data)
                else:
                    message = Message.from_bytes(data)
            except (UnicodeDecodeError, ValueError, struct.error):
                logger.warning("redis backend: dropping a message it cannot read")
                continue
            self.received += 1
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

    async def _watch(self, pubsub: PubSub) -> None:
        """Ping a quiet connection; fail one silent for the timeout (a hung Redis)."""
        loop = asyncio.get_running_loop()
        tick = self._timeout / 4
        heard = self._heard
        quiet_since = loop.time()
        pinged = False
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            if self._heard != heard:
                heard = self._heard
                quiet_since = now
                pinged = False
                continue
            if now - quiet_since >= self._timeout:
                self.health_check_failures += 1
                raise RedisHung(f"no answer from Redis in {self._timeout:g} s")
            if not pinged and now - quiet_since >= self._timeout / 2:
                pinged = True
                await pubsub.ping()
