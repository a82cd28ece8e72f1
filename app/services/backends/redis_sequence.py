"""Exactly once across hosts: the receiving side of the sequence numbers in the payload.

See :mod:`.redis_wire` for the layout. The publisher numbers every message (``seq``, per
origin worker) and names the previous one on the same channel (``prev``); the receiver
remembers the last ``seq`` per (channel, origin) and judges each payload against it.
"""

from __future__ import annotations

IN_ORDER = 0
"""Deliver: the next message of this origin on this channel, or the first one seen."""
DUPLICATE = 1
"""Drop: this message (or a later one) was delivered already; a retried write."""
AFTER_GAP = 2
"""Deliver, after telling the channel's subscribers: messages before it never arrived."""

ORIGINS_MAX = 1024
"""Origins remembered per channel; the least recently heard is forgotten beyond it."""


class SequenceTracker:
    """The last ``seq`` delivered per (channel, origin), bounded.

    Channels are the Redis channel names (bytes) this worker is subscribed to: the
    subscriber forgets a channel when Redis confirms it unsubscribed, and keeps only the
    wanted ones after a reconnect, so the table holds no more channels than the
    subscription. Per channel at most ``origins_max`` origins are kept, least recently
    heard first out. A forgotten origin's next message counts as its first (delivered, no
    gap check), as does the first message of an origin never seen (a new or restarted
    worker: its random origin id is new).
    """

    def __init__(self, origins_max: int = ORIGINS_MAX) -> None:
        self._channels: dict[bytes, dict[bytes, int]] = {}
        self._origins_max = origins_max
        self.duplicates = 0
        """Payloads dropped because they had been delivered already."""
        self.gaps = 0
        """Payloads that showed messages before them were lost."""

    def check(self, channel: bytes, origin: bytes, seq: int, prev: int) -> int:
        """Judge one payload: :data:`IN_ORDER`, :data:`DUPLICATE` or :data:`AFTER_GAP`."""
        origins = self._channels.get(channel)
        if origins is None:
            origins = self._channels[channel] = {}
        # pop and put back: a dict keeps insertion order, so the first key is the least
        # recently heard origin (the one forgotten when the table is full).
        last = origins.pop(origin, None)
        if last is None:
            if len(origins) >= self._origins_max:
                del origins[next(iter(origins))]
            origins[origin] = seq
            return IN_ORDER
        if last < 0:  # the first message since resync(): duplicates only
            if seq <= -last:
                origins[origin] = last
                self.duplicates += 1
                return DUPLICATE
            origins[origin] = seq
            return IN_ORDER
        if seq <= last:
            origins[origin] = last
            self.duplicates += 1
            return DUPLICATE
        origins[origin] = seq
        if prev > last:
            self.gaps += 1
            return AFTER_GAP
        return IN_ORDER

    def forget(self, channel: bytes) -> None:
        """This worker is no longer subscribed to ``channel``: drop what it knew of it."""
        self._channels.pop(channel, None)

    def retain(self, channels: set[bytes]) -> None:
        """Keep only ``channels`` (the ones subscribed again after a reconnect)."""
        for channel in [c for c in self._channels if c not in channels]:
            del self._channels[channel]

    def resync(self) -> None:
        """The subscription is back after an outage, and the subscribers have been told that
        anything may be missing: each origin's next message on each channel is checked for
        being a duplicate but not for a gap (the outage notice covers it). Stored negated."""
        for origins in self._channels.values():
            for origin, last in origins.items():
                origins[origin] = -abs(last)

    def size(self) -> tuple[int, int]:
        """(channels, (channel, origin) entries) held, for tests and /stats."""
        return len(self._channels), sum(len(o) for o in self._channels.values())
