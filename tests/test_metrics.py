"""GET /metrics: every live worker's figures, in a format Prometheus's own parser reads.

The collector is checked on figures made up here (two hosts, a backend down); the endpoint
on real ``uvicorn --workers 2`` servers with real clients, scraped before and after traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable

import httpx
import pytest
import websockets
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from app.services.figures import (
    ConnectionFigures,
    LatencyFigures,
    MessageFigures,
    WorkerFigures,
    WorkerInfo,
)
from app.services.latency import LATENCY_BUCKETS
from app.services.metrics import metrics_registry
from tests.support.clients import receive_many
from tests.support.metrics import scrape, total, workers_in
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats
from tests.support.waiting import eventually

FAST_HEARTBEAT = {"FANOUT_HEARTBEAT_INTERVAL": "0.25", "FANOUT_HEARTBEAT_EXPIRY": "1.5"}

COUNTERS = {
    "fanout_connections_opened",
    "fanout_connections_closed",
    "fanout_handshakes_rejected",
    "fanout_messages_received",
    "fanout_messages_delivered",
    "fanout_messages_dropped",
    "fanout_slow_consumer_disconnects",
    "fanout_gap_notices",
    "fanout_gc_collections",
    "fanout_gc_pause_seconds",
    "fanout_http_errors",
    "fanout_protocol_errors",
    "fanout_handshake_timeouts",
    "fanout_drained_connections",
}
GAUGES = {
    "fanout_connections",
    "fanout_connections_by_write_path",
    "fanout_backend_up",
    "fanout_gc_pause_longest_seconds",
    "fanout_uptime_seconds",
    "fanout_heartbeat_age_seconds",
    "fanout_channels",
    "fanout_subscriptions",
    "fanout_presence_members",
    "fanout_draining",
    "fanout_tasks",
}
HISTOGRAMS = {"fanout_publish_to_write_seconds"}


def _figures(host: str, pid: int, *, backend: str = "up") -> WorkerFigures:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[0], counts[3], counts[-1] = 5, 2, 1
    return WorkerFigures(
        uptime_seconds=float(pid),
        backend={"name": "redis", "status": backend},
        connections=ConnectionFigures(
            total=3, by_endpoint={"broadcast": 2, "echo": 1}, by_path={"asgi": 0, "direct": 3}
        ),
        channels={"secret-room": 2, "default": 1},
        messages=MessageFigures(received=7 * pid, delivered=70 * pid, dropped=pid),
        slow_consumer_disconnects=pid,
        gap_notices=2,
        connections_opened=9,
        rejected={"bad_channel": 4},
        closes={"1000": 5, "4008": 1},
        http_errors={"404": 3},
        write_latency=LatencyFigures(counts=counts, sum_seconds=1.5),
        worker=WorkerInfo(
            id=f"{host}:{pid}",
            pid=pid,
            host=host,
            connections=3,
            uptime_seconds=float(pid),
            gc={"gen2": {"collections": 4, "total_ms": 120.0, "longest_ms": 80.0}},
        ),
    )


def _collected(*workers: WorkerFigures) -> dict[str, Metric]:
    every = [(0.0, workers[0]), *((0.5, w) for w in workers[1:])]
    text = generate_latest(metrics_registry(lambda: every)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_the_collector_reports_each_worker_of_each_host_under_its_own_labels() -> None:
    families = _collected(_figures("a", 1), _figures("a", 2), _figures("b", 1, backend="down"))
    assert workers_in(families) == {"a:1", "a:2", "b:1"}
    for family in families.values():
        for sample in family.samples:
            assert sample.labels["worker"].startswith(sample.labels["host"] + ":"), sample
    assert total(families, "fanout_messages_delivered_total", worker="a:2") == 140
    assert total(families, "fanout_messages_received_total", source="socket") == 7 + 14 + 7
    assert total(families, "fanout_connections", endpoint="echo") == 3
    assert total(families, "fanout_connections_by_write_path", path="direct") == 9
    assert total(families, "fanout_connections_closed_total", code="4008") == 3
    assert total(families, "fanout_handshakes_rejected_total", reason="bad_channel") == 12
    assert total(families, "fanout_http_errors_total", status="404") == 9
    assert total(families, "fanout_backend_up", worker="a:1") == 1
    assert total(families, "fanout_backend_up", worker="b:1", backend="redis") == 0
    assert total(families, "fanout_gc_collections_total", generation="2", worker="b:1") == 4
    assert total(families, "fanout_gc_pause_longest_seconds", generation="2") == 3 * 0.08
    assert total(families, "fanout_heartbeat_age_seconds", worker="a:1") == 0
    assert total(families, "fanout_heartbeat_age_seconds", worker="b:1") == 0.5


def test_no_sample_names_a_channel_the_channels_gauge_counts_them() -> None:
    families = _collected(_figures("a", 1))
    labels = {v for f in families.values() for s in f.samples for v in s.labels.values()}
    assert "secret-room" not in labels and "default" not in labels
    assert total(families, "fanout_channels") == 2


def test_the_latency_histogram_is_cumulative_and_ends_with_every_observation() -> None:
    families = _collected(_figures("a", 1))
    samples = families["fanout_publish_to_write_seconds"].samples
    buckets = [s for s in samples if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf"
    assert [float(s.labels["le"]) for s in buckets[:-1]] == list(LATENCY_BUCKETS)
    values = [s.value for s in buckets]
    assert values == sorted(values)
    assert values[0] == 5 and values[3] == 7 and values[-1] == 8
    assert total(families, "fanout_publish_to_write_seconds_count") == 8
    assert total(families, "fanout_publish_to_write_seconds_sum") == 1.5


@contextlib.asynccontextmanager
async def clients(
    server: ServerProcess, path: str, n: int
) -> AsyncIterator[list[websockets.ClientConnection]]:
    opened = [await websockets.connect(server.ws(path), open_timeout=10) for _ in range(n)]
    try:
        yield opened
    finally:
        await asyncio.gather(*(ws.close() for ws in opened))


async def _workers_listed(server: ServerProcess, n: int) -> bool:
    return len((await fetch_stats(server))["workers"]) == n


@pytest.fixture
def two_workers(start_server: StartServer) -> ServerProcess:
    return start_server(FAST_HEARTBEAT, ["--workers", "2"])


async def test_every_family_parses_and_every_worker_of_the_server_is_in_every_answer(
    two_workers: ServerProcess,
) -> None:
    assert await eventually(lambda: _workers_listed(two_workers, 2), within=15)
    ids = {w["id"] for w in (await fetch_stats(two_workers))["workers"]}
    for _ in range(6):  # whichever worker the kernel hands the request to
        families = await scrape(two_workers)
        assert {n for n, f in families.items() if f.type == "counter"} == COUNTERS
        assert {n for n, f in families.items() if f.type == "gauge"} == GAUGES
        assert {n for n, f in families.items() if f.type == "histogram"} == HISTOGRAMS
        assert workers_in(families) == ids
        assert total(families, "fanout_backend_up", backend="local") == 2
        for family in families.values():
            assert family.name.startswith("fanout_") and family.documentation
            for sample in family.samples:
                assert sample.labels["worker"] in ids and sample.labels["host"], sample


async def test_counters_move_as_traffic_flows_on_every_worker(
    two_workers: ServerProcess,
) -> None:
    assert await eventually(lambda: _workers_listed(two_workers, 2), within=15)
    before = await scrape(two_workers)
    subscribers, messages = 6, 5
    async with clients(two_workers, "/ws/broadcast/metrics-test", subscribers) as subs:
        for i in range(messages):
            await subs[0].send(f"m{i}")
        for ws in subs:
            assert await receive_many(ws, messages) == [f"m{i}" for i in range(messages)]

        async def moved(name: str, by: float, **labels: str) -> bool:
            after = await scrape(two_workers)
            return total(after, name, **labels) - total(before, name, **labels) == by

        assert await eventually(lambda: moved("fanout_connections_opened_total", subscribers))
        assert await eventually(lambda: moved("fanout_messages_received_total", messages))
        assert await eventually(
            lambda: moved("fanout_messages_delivered_total", subscribers * messages)
        )
        assert await eventually(lambda: moved("fanout_connections", subscribers))
        assert await eventually(lambda: _one_channel_where_subscribed(two_workers))
        during = await scrape(two_workers)
        turns = total(during, "fanout_publish_to_write_seconds_count")
        assert turns > total(before, "fanout_publish_to_write_seconds_count")
        assert total(during, "fanout_publish_to_write_seconds_bucket", le="+Inf") == turns
        assert total(during, "fanout_publish_to_write_seconds_sum") > 0

    assert await eventually(
        lambda: moved("fanout_connections_closed_total", subscribers, code="1000")
    )
    assert await eventually(lambda: moved("fanout_connections", 0))

    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(two_workers.ws("/ws/broadcast/bad:name"), open_timeout=10)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{two_workers.base}/nowhere")).status_code == 404
    assert await eventually(
        lambda: moved("fanout_handshakes_rejected_total", 1, reason="bad_channel")
    )
    assert await eventually(lambda: moved("fanout_http_errors_total", 1, status="404"))


async def _one_channel_where_subscribed(server: ServerProcess) -> bool:
    """Each worker counts one channel if it holds a subscriber, else none."""
    families = await scrape(server)
    return (
        all(
            total(families, "fanout_channels", worker=worker)
            == min(1, total(families, "fanout_connections", worker=worker))
            for worker in workers_in(families)
        )
        and total(families, "fanout_channels") >= 1
    )


async def test_a_scraper_that_asks_for_openmetrics_gets_it(start_server: StartServer) -> None:
    server = start_server()
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{server.base}/metrics", headers={"Accept": "application/openmetrics-text"}
        )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    parse: Callable[[str], Iterable[Metric]] = openmetrics_parser.text_string_to_metric_families
    families = {f.name: f for f in parse(response.text)}
    assert families["fanout_messages_delivered"].type == "counter"
    assert families["fanout_publish_to_write_seconds"].type == "histogram"
