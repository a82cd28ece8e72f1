"""Publish-to-write latency: a fixed-bucket histogram kept as plain integer counts.

The worker's :class:`~app.services.direct_connection.Cork` observes once per event-loop turn
in which it writes: the time from the turn's first corked message (the oldest one it writes)
to the end of its writes, i.e. how long the last subscriber of that turn waited for its
frame to reach the transport. One observation per turn, not per message nor per connection:
a fan-out to a thousand sockets pays for it once.
"""

from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Upper bounds (seconds, inclusive) of the buckets; one more bucket counts what is above.

Part of the heartbeat's shape: workers add their counts bucket by bucket, so changing these
bounds is a change every worker of a cluster must make together.
"""


class WriteLatency:
    """Counts per bucket (not cumulative; the last one is above every bound) and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        """Seconds: the sum of every observation."""

    def observe(self, seconds: float) -> None:
        """Count one observation of ``seconds``."""
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds
