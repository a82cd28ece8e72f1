"""memory://, and local:// in a single-process server: history in this process's memory.

Per channel: its epoch (16 random hex digits, made when the channel is first touched, by an
append or a read), its newest offset, and the kept publications oldest first, each with the
(monotonic) time it was appended. Retention, as in every store:

- size: at most ``size`` publications are kept; an append beyond drops the oldest;
- ttl (> 0): a publication expires ``ttl`` seconds after its own append. Once ``ttl``
  seconds have passed since the channel's newest append (or since a read first touched
  it), everything it had has expired and the channel itself is forgotten, epoch and
  offset too: the next append or read starts a new epoch, whose first offset is 1.

Memory is bounded twice: ``size`` per channel, and :data:`MAX_CHANNELS` channels. Beyond
that, the channel idle the longest (neither appended to nor read) is forgotten first, with
its history: a client recovering on it later finds a new epoch and is told it could not
recover. Every method is a coroutine only to match the seam; none does I/O or waits.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict, deque
from itertools import islice
from typing import Final

from app.logging_setup import LOGGER_NAME
from app.services.history.store import Entry, Position, Retention

logger = logging.getLogger(LOGGER_NAME)

MAX_CHANNELS: Final = 100_000
"""Channels kept at most; beyond it the one idle the longest is forgotten (logged)."""
SWEEP_EVERY: Final = 30.0
"""Seconds between two sweeps of expired channels (a sweep walks every channel)."""


def new_epoch() -> str:
    """A fresh epoch: 16 random hex digits."""
    return secrets.token_hex(8)


class _Channel:
    """One channel's history. ``entries`` and ``times`` are parallel: a publication and
    the monotonic time of its append; the offsets are consecutive, the newest is ``top``."""

    __slots__ = ("entries", "epoch", "times", "top", "touched", "ttl")

    def __init__(self, now: float, ttl: float) -> None:
        self.epoch = new_epoch()
        self.top = 0
        self.touched = now
        """When the channel was last appended to (or made)."""
        self.ttl = ttl
        """The ttl of that append, for the sweep."""
        self.entries: deque[Entry] = deque()
        self.times: deque[float] = deque()

    def expired(self, now: float, ttl: float) -> bool:
        return ttl > 0 and self.touched + ttl <= now

    def drop_expired(self, now: float, ttl: float) -> None:
        """Drop the publications appended ``ttl`` seconds ago or earlier (a prefix)."""
        times = self.times
        if ttl > 0 and times and times[0] <= now - ttl:
            cutoff = now - ttl
            entries = self.entries
            while times and times[0] <= cutoff:
                times.popleft()
                entries.popleft()


class MemoryHistoryStore:
    """The history of this process only; see the module documentation."""

    name = "memory"

    def __init__(self, max_channels: int = MAX_CHANNELS) -> None:
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        """Least recently touched first."""
        self._max_channels = max_channels
        self._next_sweep = time.monotonic() + SWEEP_EVERY
        self.evicted = 0
        """Channels forgotten before they expired, because of the bound."""

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Forget every channel."""
        self._channels.clear()

    async def append(self, channel: str, kind: str, data: bytes, retention: Retention) -> Position:
        """Keep one publication under the channel's next offset; see HistoryStore."""
        now = time.monotonic()
        ttl = retention.ttl
        state = self._touch(channel, now, ttl)
        state.top += 1
        state.touched = now
        state.ttl = ttl
        entries, times = state.entries, state.times
        entries.append(Entry(state.top, kind, data))
        times.append(now)
        size = max(retention.size, 0)
        while len(entries) > size:
            entries.popleft()
            times.popleft()
        state.drop_expired(now, ttl)
        return Position(state.top, state.epoch)

    async def read(
        self, channel: str, after: int, limit: int | None, retention: Retention
    ) -> tuple[Position, list[Entry]]:
        """The channel's position and what it keeps above ``after``; see HistoryStore."""
        now = time.monotonic()
        state = self._touch(channel, now, retention.ttl)
        position = Position(state.top, state.epoch)
        if limit == 0 or after >= state.top:
            return position, []
        state.drop_expired(now, retention.ttl)
        entries = state.entries
        if not entries:
            return position, []
        count = len(entries)
        start = max(after + 1 - entries[0].offset, 0)
        stop = count if limit is None else min(count, start + limit)
        if start <= count // 2:
            return position, list(islice(entries, start, stop))
        # Near the newest (a recovering client usually is): walk from that end.
        found = list(islice(reversed(entries), count - stop, count - start))
        found.reverse()
        return position, found

    def status(self) -> dict[str, object]:
        """Name, channels kept, channels forgotten early because of the bound."""
        return {"name": self.name, "channels": len(self._channels), "evicted": self.evicted}

    def _touch(self, channel: str, now: float, ttl: float) -> _Channel:
        """The channel's live state, made (with a new epoch) if it had none or it expired;
        it becomes the most recently touched."""
        channels = self._channels
        state = channels.get(channel)
        if state is not None and not state.expired(now, ttl):
            channels.move_to_end(channel)
            return state
        if state is not None:
            del channels[channel]
        if now >= self._next_sweep:
            self._sweep(now)
        if len(channels) >= self._max_channels:
            self._evict(len(channels) - self._max_channels + 1)
        state = channels[channel] = _Channel(now, ttl)
        return state

    def _sweep(self, now: float) -> None:
        """Forget the channels whose ttl has passed since their newest append."""
        self._next_sweep = now + SWEEP_EVERY
        channels = self._channels
        for name in [n for n, s in channels.items() if s.expired(now, s.ttl)]:
            del channels[name]

    def _evict(self, count: int) -> None:
        channels = self._channels
        for _ in range(count):
            channels.popitem(last=False)
        before, self.evicted = self.evicted, self.evicted + count
        if before == 0 or before // 1000 != self.evicted // 1000:  # the first, then every 1000th
            logger.warning(
                "history store full (%d channels): forgot the one idle the longest "
                "(%d so far); their subscribers cannot recover",
                self._max_channels,
                self.evicted,
            )
