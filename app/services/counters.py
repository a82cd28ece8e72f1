"""Counters a worker keeps about its traffic; cheap integer increments on the hot path."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Counters:
    """Monotonic counts since the worker started."""

    received: int = 0
    """Messages received from clients."""
    delivered: int = 0
    """Messages handed to a client's socket."""
    dropped: int = 0
    """Messages discarded because their receiver was closed as a slow consumer."""
    slow_consumer_disconnects: int = 0
    connections_opened: int = 0
    handshake_timeouts: int = 0
    """Connections closed because their request head did not arrive in time (slowloris)."""
    rejected: Counter[str] = field(default_factory=Counter)
    """WebSocket handshakes refused by the application, by reason."""
    closes: Counter[int] = field(default_factory=Counter)
    """Closed WebSocket connections, by close code."""
    http_errors: Counter[int] = field(default_factory=Counter)
    """HTTP requests answered with an error status by the application, by status."""
    protocol_errors: Counter[int] = field(default_factory=Counter)
    """fanout.v1 commands refused (by error code) and unreadable frames (4501)."""
    api_published: int = 0
    """Messages published through the HTTP API."""
    rate_limited: int = 0
    """Messages refused by FANOUT_CLIENT_PUBLISH_RATE (dropped on raw sockets, 429 on /ws)."""
    drained: int = 0
    """Connections closed with 1012 by a drain (SIGTERM, POST /api/drain)."""
