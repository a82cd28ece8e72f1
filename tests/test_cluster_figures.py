"""Cluster figures: every worker's typed figures added up, heartbeats in order."""

from __future__ import annotations

import asyncio

import msgspec

from app.services.cluster import ClusterView
from app.services.direct_connection import Cork
from app.services.figures import (
    PER_WORKER,
    ConnectionFigures,
    LatencyFigures,
    MessageFigures,
    WorkerFigures,
    WorkerInfo,
    add_up,
)
from app.services.latency import LATENCY_BUCKETS, WriteLatency
from app.services.message import Message


def _worker(pid: int, connections: int, channels: dict[str, int]) -> WorkerFigures:
    return WorkerFigures(
        uptime_seconds=float(pid),
        backend={"name": "local", "status": "up"},
        connections=ConnectionFigures(
            total=connections, by_endpoint={"broadcast": connections}, by_path={"direct": 1}
        ),
        channels=channels,
        messages=MessageFigures(received=pid, delivered=10 * pid, dropped=0),
        gap_notices=pid,
        closes={"1000": 1},
        worker=WorkerInfo(id=f"h:{pid}", pid=pid, host="h", connections=connections),
    )


def test_figures_add_up_by_type_and_keep_what_describes_the_answering_worker() -> None:
    a, b = _worker(1, 3, {"news": 2, "default": 1}), _worker(2, 4, {"news": 4})
    total = add_up([a, b])
    assert total.connections == ConnectionFigures(
        total=7, by_endpoint={"broadcast": 7}, by_path={"direct": 2}
    )
    assert total.channels == {"default": 1, "news": 6}
    assert total.messages == MessageFigures(received=3, delivered=30, dropped=0)
    assert total.closes == {"1000": 2}
    for name in PER_WORKER:
        assert getattr(total, name) == getattr(a, name)


def test_a_worker_that_sends_partial_figures_still_adds_up() -> None:
    # An older worker (a rolling restart) may lack newer fields: defaults count as zero.
    partial = msgspec.convert({"connections": {"total": 2}}, WorkerFigures)
    total = add_up([_worker(1, 3, {"news": 1}), partial])
    assert total.connections.total == 5 and total.channels == {"news": 1}


def _view(worker_id: str, sent: list[Message], figures: list[WorkerFigures]) -> ClusterView:
    return ClusterView(
        worker_id=worker_id,
        interval=1.0,
        expiry=60.0,
        publish=lambda _channel, message: sent.append(message),
        snapshot=lambda: figures[-1],
    )


def test_merged_stats_list_every_worker_and_total_their_figures() -> None:
    sent: list[Message] = []
    first = _view("h:1", sent, [_worker(1, 3, {"news": 2})])
    second = _view("h:2", [], [_worker(2, 4, {"news": 4})])
    first._send_heartbeat()
    second.receive(sent[-1])
    merged = second.merged(_worker(2, 4, {"news": 4}))
    assert merged["connections"]["total"] == 7
    assert merged["channels"] == {"news": 6}
    assert [w["pid"] for w in merged["workers"]] == [1, 2]
    assert merged["cluster"]["workers"] == 2 and merged["cluster"]["hosts"] == 1
    assert merged["uptime_seconds"] == 2.0  # the answering worker's own


def test_a_malformed_heartbeat_is_ignored() -> None:
    view = _view("h:2", [], [_worker(2, 1, {})])
    body = b'{"type":"heartbeat","id":"h:9","stats":{"connections":{"total":"many"}}}'
    view.receive(Message.from_bytes(body))
    assert view.peers() == []


def test_histogram_buckets_add_up_element_by_element_and_a_worker_without_them_adds_nothing() -> (
    None
):
    a = WorkerFigures(write_latency=LatencyFigures(counts=[1, 2, 0], sum_seconds=0.5))
    b = WorkerFigures(write_latency=LatencyFigures(counts=[0, 3, 4], sum_seconds=0.25))
    older = msgspec.convert({"connections": {"total": 1}}, WorkerFigures)  # no write_latency
    total = add_up([a, older, b])
    assert total.write_latency == LatencyFigures(counts=[1, 5, 4], sum_seconds=0.75)


def test_buckets_of_another_layout_are_left_out_rather_than_added_to_the_wrong_bucket() -> None:
    a = WorkerFigures(write_latency=LatencyFigures(counts=[1, 2, 3]))
    other = WorkerFigures(write_latency=LatencyFigures(counts=[5, 5]))
    assert add_up([a, other]).write_latency.counts == [1, 2, 3]


def test_the_cork_observes_once_per_loop_turn_whatever_it_writes() -> None:
    latency = WriteLatency()
    cork = Cork(latency)
    flushed: list[int] = []

    class Stub:
        def __init__(self, n: int) -> None:
            self.n = n

        def flush(self) -> None:
            flushed.append(self.n)

    async def two_turns() -> None:
        for n in range(100):
            cork.add(Stub(n))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        cork.add(Stub(100))  # type: ignore[arg-type]
        await asyncio.sleep(0)

    asyncio.run(two_turns())
    assert flushed == list(range(101))
    assert sum(latency.counts) == 2
    assert len(latency.counts) == len(LATENCY_BUCKETS) + 1
    assert 0 < latency.sum < 1
