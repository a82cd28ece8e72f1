"""The interface every idempotency store implements, and the flow that uses it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Protocol

from app.logging_setup import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

RESULT_TTL: Final = 300.0
"""Seconds a publication's result is kept: a key reused within them gets it back."""
LEASE: Final = 10.0
"""Seconds a claim stays pending before another request may take the key over. A publish
never waits, so a claim is normally completed within milliseconds; the lease only matters
when the claiming worker died in between, and then it must not lock the key for the
whole RESULT_TTL."""
WAIT: Final = 2.0
"""Seconds a duplicate that finds the key pending waits for the first one's result."""
POLL: Final = 0.05
"""Seconds between two looks at a pending key."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`IdempotencyStore.claim` found.

    Exactly one of three: ``token`` set (the key is the caller's: publish, then
    :meth:`~IdempotencyStore.complete` with this token), ``result`` set (published before:
    answer with it), or neither (another request holds the key and has not finished).
    """

    token: str | None = None
    result: bytes | None = None


PENDING: Final = Claim()


class IdempotencyUnavailable(RuntimeError):
    """The store cannot be reached (Redis down, the SQLite file locked or unwritable)."""


class IdempotencyConflict(RuntimeError):
    """The key is still held by another request after :data:`WAIT` seconds."""


class IdempotencyStore(Protocol):
    """Remembers, per key, that a publication happened and what it answered.

    Every method may raise :class:`IdempotencyUnavailable`. A key is whatever the caller
    scopes it to (the HTTP API: channel and idempotency key); stores treat it as opaque.
    """

    name: str

    async def start(self) -> None:
        """Get ready (connect lazily where possible: the store may never be used)."""

    async def stop(self) -> None:
        """Release connections, threads and files."""

    async def claim(self, key: str, lease: float) -> Claim:
        """Take ``key`` for ``lease`` seconds if it is free or expired, atomically across
        every process that shares the store; otherwise say what holds it."""

    async def complete(self, key: str, token: str, result: bytes, ttl: float) -> None:
        """Store ``result`` for ``ttl`` seconds, if the claim ``token`` still holds ``key``."""

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up (nothing was published), if ``token`` still holds it."""

    def status(self) -> dict[str, object]:
        """A JSON-able description for logs and /stats: at least ``name``."""


async def run_once(
    store: IdempotencyStore,
    key: str,
    publish: Callable[[], Awaitable[bytes]],
    *,
    wait: float = WAIT,
    poll: float = POLL,
    lease: float = LEASE,
    ttl: float = RESULT_TTL,
) -> bytes:
    """``publish()``'s result, calling it only if no request with ``key`` did in ``ttl``.

    The first request claims the key (pending), publishes, and stores the result; a
    concurrent duplicate that finds it pending polls for up to ``wait`` seconds for that
    result, then gives up with :class:`IdempotencyConflict` (409: retry later). ``publish``
    awaits only the history store on a history channel (fan-out itself never waits), so
    the window between claim and result is a store round trip or two.
    """
    deadline = time.monotonic() + wait
    while True:
        claim = await store.claim(key, lease)
        if claim.token is not None:
            token = claim.token
            break
        if claim.result is not None:
            return claim.result
        if time.monotonic() >= deadline:
            raise IdempotencyConflict("a request with this idempotency_key is in progress")
        await asyncio.sleep(poll)
    try:
        result = await publish()
    except BaseException:
        await _shielded(store.release(key, token), "release")
        raise
    # Published: from here the result must be stored even if the request is cancelled
    # (client gone), or a retry after the lease would publish a second time.
    await _shielded(store.complete(key, token, result, ttl), "complete")
    return result


async def _shielded(operation: Coroutine[Any, Any, None], what: str) -> None:
    task = asyncio.ensure_future(operation)
    try:
        await asyncio.shield(task)
    except IdempotencyUnavailable as exc:
        # The publication itself went out; only its record is missing. A retry within
        # the lease gets 409, after it a second publication: say so once, here.
        logger.warning("idempotency store: could not %s a claim: %s", what, exc)
