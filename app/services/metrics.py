"""Prometheus metrics from the worker figures the heartbeat already carries.

Whichever worker answers ``GET /metrics`` reports every live worker it knows of (its own
figures live, the others' as of their last heartbeat, like ``/stats``), each sample labelled
with ``worker`` (``host:pid``) and ``host``. Nothing is counted twice and nothing is written
to disk: no prometheus-client multiprocess files, no global registry. Each app builds its
own :class:`~prometheus_client.CollectorRegistry` holding one :class:`FiguresCollector`.

No label carries a channel name (unbounded cardinality); ``fanout_channels`` counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from app.services.figures import WorkerFigures
from app.services.latency import LATENCY_BUCKETS

EveryWorker = Callable[[], list[tuple[float, WorkerFigures]]]
"""Every live worker's (heartbeat age in seconds, figures), as :meth:`Node.every_worker`."""

WORKER = ("worker", "host")
"""The labels every sample carries: which worker, on which host."""

GENERATIONS = ("gen0", "gen1", "gen2")


def metrics_registry(every_worker: EveryWorker) -> CollectorRegistry:
    """A registry of its own for one app, reading figures from ``every_worker``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(every_worker))
    return registry


class FiguresCollector(Collector):
    """Turns every live worker's :class:`WorkerFigures` into metric families, per scrape."""

    def __init__(self, every_worker: EveryWorker) -> None:
        self._every_worker = every_worker

    def collect(self) -> Iterable[Metric]:
        """One family per metric, one sample per worker (and per label value)."""
        f = _Families()
        for age, figures in self._every_worker():
            f.add(figures, age)
        return f.all()


class _Families:
    """The families of one scrape, filled worker by worker."""

    def __init__(self) -> None:
        self.connections = GaugeMetricFamily(
            "fanout_connections",
            "Open WebSocket connections, by endpoint.",
            labels=[*WORKER, "endpoint"],
        )
        self.connections_by_path = GaugeMetricFamily(
            "fanout_connections_by_write_path",
            "Open WebSocket connections, by write path (direct: prepared frames to the"
            " transport; asgi: the plain ASGI fallback).",
            labels=[*WORKER, "path"],
        )
        self.opened = CounterMetricFamily(
            "fanout_connections_opened",
            "WebSocket connections registered (before their handshake completed).",
            labels=list(WORKER),
        )
        self.closed = CounterMetricFamily(
            "fanout_connections_closed",
            "WebSocket connections closed, by close code.",
            labels=[*WORKER, "code"],
        )
        self.rejected = CounterMetricFamily(
            "fanout_handshakes_rejected",
            "WebSocket handshakes refused by the application, by reason.",
            labels=[*WORKER, "reason"],
        )
        self.received = CounterMetricFamily(
            "fanout_messages_received",
            "Messages received, by where they came in (socket: from clients; api: HTTP API).",
            labels=[*WORKER, "source"],
        )
        self.delivered = CounterMetricFamily(
            "fanout_messages_delivered",
            "Messages handed to a client's socket.",
            labels=list(WORKER),
        )
        self.dropped = CounterMetricFamily(
            "fanout_messages_dropped",
            "Messages discarded because their receiver was closed as a slow consumer.",
            labels=list(WORKER),
        )
        self.slow = CounterMetricFamily(
            "fanout_slow_consumer_disconnects",
            "Clients closed with 4008 because their outbox overflowed.",
            labels=list(WORKER),
        )
        self.backend_up = GaugeMetricFamily(
            "fanout_backend_up",
            "1 while the worker's backend (how messages reach other workers) is up, else 0.",
            labels=[*WORKER, "backend"],
        )
        self.gaps = CounterMetricFamily(
            "fanout_gap_notices",
            "Times the worker told its subscribers that messages from elsewhere may be missing.",
            labels=list(WORKER),
        )
        self.gc_collections = CounterMetricFamily(
            "fanout_gc_collections",
            "Garbage collections, by generation.",
            labels=[*WORKER, "generation"],
        )
        self.gc_pause = CounterMetricFamily(
            "fanout_gc_pause_seconds",
            "Time the event loop stood still in garbage collections, by generation.",
            labels=[*WORKER, "generation"],
        )
        self.gc_longest = GaugeMetricFamily(
            "fanout_gc_pause_longest_seconds",
            "Longest single garbage-collection pause since the worker started, by generation.",
            labels=[*WORKER, "generation"],
        )
        self.uptime = GaugeMetricFamily(
            "fanout_uptime_seconds",
            "Seconds since the worker started.",
            labels=list(WORKER),
        )
        self.heartbeat_age = GaugeMetricFamily(
            "fanout_heartbeat_age_seconds",
            "Age of the figures reported for a worker: 0 for the answering worker, else the"
            " time since its last heartbeat.",
            labels=list(WORKER),
        )
        self.handshake_timeouts = CounterMetricFamily(
            "fanout_handshake_timeouts",
            "Connections closed because their request head was not complete within"
            " FANOUT_HANDSHAKE_TIMEOUT (slowloris).",
            labels=list(WORKER),
        )
        self.subscriptions = GaugeMetricFamily(
            "fanout_subscriptions",
            "fanout.v1 subscriptions (a socket with three channels counts three).",
            labels=list(WORKER),
        )
        self.protocol_errors = CounterMetricFamily(
            "fanout_protocol_errors",
            "fanout.v1 commands refused, by error code (4501: an unreadable frame closed).",
            labels=[*WORKER, "code"],
        )
        self.presence_members = GaugeMetricFamily(
            "fanout_presence_members",
            "Members the worker owns on presence channels (a client on two channels counts two).",
            labels=list(WORKER),
        )
        self.channels = GaugeMetricFamily(
            "fanout_channels",
            "Channels with at least one subscriber on the worker.",
            labels=list(WORKER),
        )
        self.http_errors = CounterMetricFamily(
            "fanout_http_errors",
            "HTTP requests answered with an error status by the application, by status.",
            labels=[*WORKER, "status"],
        )
        self.draining = GaugeMetricFamily(
            "fanout_draining",
            "1 from the start of a drain (SIGTERM, POST /api/drain) until the worker exits:"
            " /healthz answers 503 and new sockets are refused.",
            labels=list(WORKER),
        )
        self.tasks = GaugeMetricFamily(
            "fanout_tasks",
            "asyncio tasks alive in the worker: a few, not one per socket; a count that keeps"
            " climbing is a leak.",
            labels=list(WORKER),
        )
        self.drained = CounterMetricFamily(
            "fanout_drained_connections",
            "Connections closed with 1012 and a reconnect hint by a drain.",
            labels=list(WORKER),
        )
        self.latency = HistogramMetricFamily(
            "fanout_publish_to_write_seconds",
            "Time from a message's delivery on the worker to the write of its frame to every"
            " subscriber's socket: one observation per event-loop turn (its oldest message),"
            " direct write path only.",
            labels=list(WORKER),
        )

    def add(self, f: WorkerFigures, age: float) -> None:
        who = [f.worker.id, f.worker.host]
        _each(self.connections, who, f.connections.by_endpoint)
        _each(self.connections_by_path, who, f.connections.by_path)
        self.opened.add_metric(who, f.connections_opened)
        _each(self.closed, who, f.closes)
        _each(self.rejected, who, f.rejected)
        self.received.add_metric([*who, "socket"], f.messages.received)
        self.received.add_metric([*who, "api"], f.messages.published_api)
        self.subscriptions.add_metric(who, f.subscriptions)
        self.handshake_timeouts.add_metric(who, f.handshake_timeouts)
        self.draining.add_metric(who, 1.0 if f.worker.draining else 0.0)
        self.drained.add_metric(who, f.drained)
        self.tasks.add_metric(who, f.worker.tasks)
        _each(self.protocol_errors, who, f.protocol_errors)
        self.delivered.add_metric(who, f.messages.delivered)
        self.dropped.add_metric(who, f.messages.dropped)
        self.slow.add_metric(who, f.slow_consumer_disconnects)
        backend = f.backend
        up = 1.0 if backend.get("status") == "up" else 0.0
        self.backend_up.add_metric([*who, str(backend.get("name", ""))], up)
        self.gaps.add_metric(who, f.gap_notices)
        for generation in GENERATIONS:
            gc = _mapping(f.worker.gc.get(generation))
            labels = [*who, generation[-1]]
            self.gc_collections.add_metric(labels, _number(gc.get("collections")))
            self.gc_pause.add_metric(labels, _number(gc.get("total_ms")) / 1000)
            self.gc_longest.add_metric(labels, _number(gc.get("longest_ms")) / 1000)
        self.uptime.add_metric(who, f.uptime_seconds)
        self.heartbeat_age.add_metric(who, round(age, 3))
        self.channels.add_metric(who, len(f.channels))
        self.presence_members.add_metric(who, f.presence_members)
        _each(self.http_errors, who, f.http_errors)
        counts = f.write_latency.counts
        if len(counts) == len(LATENCY_BUCKETS) + 1:  # else: another layout, not comparable
            buckets: list[tuple[str, float]] = []
            running = 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
                running += count
                buckets.append((_le(bound), running))
            self.latency.add_metric(who, buckets, f.write_latency.sum_seconds)

    def all(self) -> list[Metric]:
        return [value for value in vars(self).values() if isinstance(value, Metric)]


def _each(
    family: CounterMetricFamily | GaugeMetricFamily, who: list[str], values: Mapping[str, int]
) -> None:
    for key, value in values.items():
        family.add_metric([*who, key], value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float:
    """A figure as a float; what a peer sent that is not a number counts as 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _le(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus clients write it (``0.005``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(bound)
