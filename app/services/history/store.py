"""The history store seam: where a channel's publications are kept, numbered and read back.

A store assigns each publication on a history channel the next offset (1, 2, 3, ... per
channel) under the channel's epoch, keeps at most ``size`` publications for at most
``ttl`` seconds, and reads them back. The epoch is a string that changes whenever the
channel's history is lost (the store was wiped, expired, or another store took over), so
a client's ``since: {o, e}`` with an old epoch cannot be recovered.

Implementations: :mod:`.memory` (one process), :mod:`.sqlite` (the workers of one host,
local://), :mod:`.redis` (Redis Streams, redis://). Every method may be slow (I/O): callers
await them off the hot path; none may block the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

KIND_TEXT = "s"
KIND_JSON = "d"
KIND_BINARY = "b"
"""A stored publication's kind: text, JSON data (verbatim bytes), binary."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a channel's history stands: its newest offset (0: none yet) and its epoch."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored publication: its offset, kind (``KIND_*``) and payload bytes."""

    offset: int
    kind: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of a channel's history to keep: at most ``size`` publications, each for
    ``ttl`` seconds after it was appended (0: no time limit); a channel with nothing kept
    for ``ttl`` seconds is forgotten, epoch included."""

    size: int
    ttl: float


class HistoryStore(Protocol):
    """Numbers, keeps and reads back publications of history channels."""

    async def start(self) -> None:
        """Connect or open what the store needs."""

    async def stop(self) -> None:
        """Release it; every task and thread the store owns ends."""

    async def append(self, channel: str, kind: str, data: bytes, retention: Retention) -> Position:
        """Store one publication under the channel's next offset, atomically; trim to
        ``retention``. Returns the publication's own position (its offset and the epoch).
        Raises :class:`HistoryUnavailable` when the store cannot be reached."""

    async def read(
        self, channel: str, after: int, limit: int | None, retention: Retention
    ) -> tuple[Position, list[Entry]]:
        """The channel's current position and, oldest first, up to ``limit`` stored
        publications with offsets above ``after`` (``None``: every one still kept; ``0``:
        none, the position only). The position and the entries are one consistent
        snapshot: no entry above the position, none missing below it that is still kept.

        A channel with nothing kept (never written, or expired) has offset 0 and an epoch
        that the store keeps (for ``retention.ttl``), so the next append continues it; a
        read never invents a new epoch for a channel whose history still exists. Raises
        :class:`HistoryUnavailable` when the store cannot be reached."""


class HistoryUnavailable(Exception):
    """The store could not be reached or answered with an error (HTTP 503, error 503)."""
