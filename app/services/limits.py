"""Abuse limits: a client's publish rate, and the sockets one address may hold.

:class:`PublishLimit` is built once from FANOUT_CLIENT_PUBLISH_RATE and _BURST and hands each
connection its own :class:`PublishBucket`, which the receive loop asks once per message (one
clock read and a few float operations; no bucket at all when the limit is off).
:class:`AddressLimit` counts the sockets of each client address for
FANOUT_MAX_CONNECTIONS_PER_IP; it is asked once per handshake and told once per close.
"""

from __future__ import annotations

import math
from time import monotonic

RATE_LIMITED_REASON = "publish rate limit exceeded"
"""Reason of the 4029 close frame."""


class PublishBucket:
    """One connection's publish allowance: a token bucket of ``burst`` tokens refilled at
    ``rate`` per second, kept as the time it will be full again (GCRA, the "virtual
    scheduling" form of the token bucket: one float instead of a count and a timestamp).

    :meth:`take` answers whether a message may go. Refused messages are counted per window
    of ``burst / rate`` seconds (the time the bucket takes to fill); more than ``burst`` of
    them in one window, that is a client sending at more than about twice the rate, and
    :attr:`exhausted` turns true: the caller closes the socket with 4029.
    """

    __slots__ = (
        "_burst",
        "_full_at",
        "_interval",
        "_tolerance",
        "_window",
        "_window_ends",
        "refused",
    )

    def __init__(self, rate: float, burst: int) -> None:
        self._interval = 1.0 / rate
        """Seconds one token takes to come back."""
        # How far ahead of now the bucket's full time may be and still leave a token: burst - 1
        # intervals, and a hair more against rounding (0.1 added three times is not 3 * 0.1).
        self._tolerance = (burst - 1 + 1e-6) * self._interval
        self._burst = burst
        self._window = burst * self._interval
        self._full_at = 0.0
        self._window_ends = 0.0
        self.refused = 0
        """Messages refused in the current window."""

    def take(self) -> bool:
        """Use one token if there is one: True to publish, False to refuse (and count)."""
        now = monotonic()
        full_at = self._full_at
        if full_at < now:
            full_at = now
        elif full_at - now > self._tolerance:
            if now >= self._window_ends:
                self._window_ends = now + self._window
                self.refused = 1
            else:
                self.refused += 1
            return False
        self._full_at = full_at + self._interval
        return True

    @property
    def exhausted(self) -> bool:
        """Whether more than ``burst`` messages were refused within one window."""
        return self.refused > self._burst


class PublishLimit:
    """FANOUT_CLIENT_PUBLISH_RATE (messages per second, 0: no limit) and _BURST."""

    __slots__ = ("burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        # 0: one second's worth, at least one message.
        self.burst = burst if burst > 0 else max(1, math.ceil(rate))

    def bucket(self) -> PublishBucket | None:
        """A new connection's bucket, or None when there is no limit (nothing to check)."""
        return PublishBucket(self.rate, self.burst) if self.rate > 0 else None

    def describe(self) -> str:
        """The limit as log lines show it."""
        return f"{self.rate:g}/s, burst {self.burst}"


class AddressLimit:
    """Open sockets per client address on this worker (FANOUT_MAX_CONNECTIONS_PER_IP).

    The address is the host part of the connection's peer, which behind a proxy is the
    forwarded client address where uvicorn trusts the proxy (``--forwarded-allow-ips``).
    Nothing is kept when the limit is 0 (off); an address leaves the table with its last socket.
    """

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def allows(self, address: str) -> bool:
        """Whether ``address`` may open one more socket."""
        return self.limit == 0 or self._held.get(address, 0) < self.limit

    def add(self, address: str) -> None:
        """``address`` opened a socket (registered before its handshake completes)."""
        if self.limit:
            self._held[address] = self._held.get(address, 0) + 1

    def remove(self, address: str) -> None:
        """One of ``address``'s sockets ended."""
        held = self._held.get(address)
        if held is None:
            return
        if held > 1:
            self._held[address] = held - 1
        else:
            del self._held[address]

    def held(self, address: str) -> int:
        """Sockets ``address`` holds now."""
        return self._held.get(address, 0)


def address_of(peer: str) -> str:
    """The address part of a peer as log lines show it (``host:port``, or ``unknown``)."""
    host, colon, _port = peer.rpartition(":")
    return host if colon else peer
