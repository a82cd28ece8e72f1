"""memory://: one process's idempotency keys in a dict, with expiry and a size bound."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Final

from app.logging_setup import LOGGER_NAME
from app.services.idempotency.base import PENDING, Claim

logger = logging.getLogger(LOGGER_NAME)

MAX_ENTRIES: Final = 100_000
"""Keys kept at most; beyond it the oldest claims are forgotten first (logged)."""
SWEEP_EVERY: Final = 30.0
"""Seconds between two sweeps of expired entries (a sweep walks every entry)."""


class _Entry:
    __slots__ = ("expires", "owner", "result")

    def __init__(self, owner: str | None, result: bytes | None, expires: float) -> None:
        self.owner = owner
        self.result = result
        self.expires = expires


class MemoryIdempotencyStore:
    """Keys of this process only: right for memory:// and for a single-process server,
    wrong for ``--workers N`` (each worker would publish a duplicate once)."""

    name = "memory"

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: dict[str, _Entry] = {}
        """In claim order (a re-claimed key moves to the end), so the first is the oldest."""
        self._max_entries = max_entries
        self._next_sweep = 0.0
        self._counter = 0
        self.evicted = 0

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Forget every key."""
        self._entries.clear()

    async def claim(self, key: str, lease: float) -> Claim:
        """Take ``key`` if it is free or expired; see IdempotencyStore."""
        now = time.monotonic()
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            if entry.expires > now:
                return PENDING if entry.result is None else Claim(result=entry.result)
            del entries[key]
        if now >= self._next_sweep or len(entries) >= self._max_entries:
            self._sweep(now)
        self._counter += 1
        token = f"{os.getpid()}-{self._counter}"
        entries[key] = _Entry(token, None, now + lease)
        return Claim(token=token)

    async def complete(self, key: str, token: str, result: bytes, ttl: float) -> None:
        """Keep ``result`` for ``ttl`` seconds if ``token`` still holds ``key``."""
        entry = self._entries.get(key)
        if entry is not None and entry.owner == token:
            entry.owner = None
            entry.result = result
            entry.expires = time.monotonic() + ttl

    async def release(self, key: str, token: str) -> None:
        """Forget ``key`` if ``token`` still holds it."""
        entry = self._entries.get(key)
        if entry is not None and entry.owner == token:
            del self._entries[key]

    def status(self) -> dict[str, object]:
        """Name, keys held, keys forgotten early because of the bound."""
        return {"name": self.name, "keys": len(self._entries), "evicted": self.evicted}

    def _sweep(self, now: float) -> None:
        """Drop expired entries; if still full, the oldest claims."""
        self._next_sweep = now + SWEEP_EVERY
        entries = self._entries
        for key in [k for k, e in entries.items() if e.expires <= now]:
            del entries[key]
        excess = len(entries) - self._max_entries + 1
        if excess > 0:
            # A tenth at once, so that a store kept full does not walk every entry per claim.
            excess = max(excess, self._max_entries // 10)
            for key in list(itertools.islice(entries, excess)):
                del entries[key]
            self.evicted += excess
            logger.warning(
                "idempotency store full (%d keys): forgot the %d oldest before their time",
                self._max_entries,
                excess,
            )
