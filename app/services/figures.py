"""A worker's figures as one typed object, and how a cluster's figures add up.

One :class:`WorkerFigures` is what a worker reports about itself: it is this worker's part
of ``/stats`` and the heartbeat other workers receive. Adding the figures of every worker is
driven by the types, not by lists of keys: numbers add, maps of numbers add per key, lists
of numbers (histogram buckets) add element by element, nested figures add field by field;
only the fields in :data:`PER_WORKER` describe the answering worker itself and are kept,
not added.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec


class ConnectionFigures(msgspec.Struct):
    """Open WebSocket connections."""

    total: int = 0
    by_endpoint: dict[str, int] = {}
    """By socket endpoint ('broadcast', 'echo')."""
    by_path: dict[str, int] = {}
    """By write path ('direct', 'asgi')."""


class MessageFigures(msgspec.Struct):
    """Messages since the worker started."""

    received: int = 0
    """From clients."""
    delivered: int = 0
    """Handed to a client's socket."""
    dropped: int = 0
    """Discarded because their receiver was closed as a slow consumer."""
    published_api: int = 0
    """Published through the HTTP API."""
    rate_limited: int = 0
    """Refused by the publish rate limit (dropped on raw sockets, 429 on fanout.v1)."""


class LatencyFigures(msgspec.Struct):
    """Publish-to-write latency of the direct write path (see app/services/latency.py)."""

    counts: list[int] = []
    """Observations per bucket of ``LATENCY_BUCKETS``, not cumulative; the last counts those
    above every bound."""
    sum_seconds: float = 0.0
    """Sum of every observation."""


class WorkerInfo(msgspec.Struct):
    """Who a worker is, for the ``workers`` list of ``/stats``."""

    id: str = ""
    pid: int = 0
    host: str = ""
    connections: int = 0
    uptime_seconds: float = 0.0
    gc: dict[str, Any] = {}
    draining: bool = False
    """True from the start of a drain until the worker exits: it refuses new sockets."""
    tasks: int = 0
    """asyncio tasks alive in the worker: a few, not one per socket (idle sockets need
    none); a count that keeps climbing is a leak."""


class WorkerFigures(msgspec.Struct):
    """Everything one worker reports; the JSON shape of a one-worker ``/stats``."""

    uptime_seconds: float = 0.0
    backend: dict[str, Any] = {}
    connections: ConnectionFigures = msgspec.field(default_factory=ConnectionFigures)
    channels: dict[str, int] = {}
    """Subscribers per channel (raw sockets and fanout.v1 subscriptions)."""
    subscriptions: int = 0
    """fanout.v1 subscriptions (one socket may hold many)."""
    presence_members: int = 0
    """Members this worker owns on presence channels (a client on two channels counts 2)."""
    messages: MessageFigures = msgspec.field(default_factory=MessageFigures)
    slow_consumer_disconnects: int = 0
    gap_notices: int = 0
    """Times this worker told its clients that messages from elsewhere may be missing."""
    connections_opened: int = 0
    handshake_timeouts: int = 0
    """Connections closed before their request head was complete (FANOUT_HANDSHAKE_TIMEOUT)."""
    drained: int = 0
    """Connections closed with 1012 by a drain."""
    rejected: dict[str, int] = {}
    """Refused handshakes by reason."""
    closes: dict[str, int] = {}
    """Closed connections by close code."""
    http_errors: dict[str, int] = {}
    """HTTP error answers by status."""
    protocol_errors: dict[str, int] = {}
    """fanout.v1 errors by code (4501: unreadable frame, socket closed)."""
    write_latency: LatencyFigures = msgspec.field(default_factory=LatencyFigures)
    worker: WorkerInfo = msgspec.field(default_factory=WorkerInfo)


PER_WORKER = frozenset({"uptime_seconds", "backend", "gap_notices", "worker"})
"""Fields of :class:`WorkerFigures` that describe the answering worker, not the cluster."""

_S = TypeVar("_S", bound=msgspec.Struct)


def add_up(everyone: Sequence[WorkerFigures]) -> WorkerFigures:
    """The cluster's figures: every field added up, except :data:`PER_WORKER` (the first's)."""
    own = everyone[0]
    values = {
        name: getattr(own, name)
        if name in PER_WORKER
        else _add([getattr(f, name) for f in everyone])
        for name in own.__struct_fields__
    }
    return WorkerFigures(**values)


def _add(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, msgspec.Struct):
        return _add_structs(values)
    if isinstance(first, dict):
        total: Counter[str] = Counter()
        for value in values:
            total.update(value)
        return dict(sorted(total.items()))
    if isinstance(first, list):
        return _add_lists(values)
    if isinstance(first, int | float) and not isinstance(first, bool):
        return sum(values)
    raise TypeError(f"cannot add figures of type {type(first).__name__}")


def _add_lists(values: list[list[Any]]) -> list[Any]:
    """Element by element. An empty list is a worker without the figure (an older version);
    one of another length (other buckets) cannot be added bucket by bucket and is left out."""
    present = [v for v in values if v]
    if not present:
        return []
    width = len(present[0])
    return [sum(column) for column in zip(*(v for v in present if len(v) == width), strict=True)]


def _add_structs(values: list[_S]) -> _S:
    first = values[0]
    fields = {name: _add([getattr(v, name) for v in values]) for name in first.__struct_fields__}
    return type(first)(**fields)
