"""The drain's plan without a server: batches over the window, jittered hints, the order."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from app.config import Settings, SettingsError
from app.services.cluster import ClusterView
from app.services.drain import (
    MIN_BATCH,
    RECONNECT_FLOOR,
    TICK,
    close_reason,
    reconnect_after,
    schedule,
)
from app.services.figures import WorkerFigures
from app.services.message import Message


@pytest.mark.parametrize("count", [1, 9, 10, 11, 500, 10_000, 123_457])
@pytest.mark.parametrize("seconds", [0.0, 0.01, 1.0, 3.0, 10.0])
def test_every_socket_is_in_exactly_one_batch_within_the_window(count: int, seconds: float) -> None:
    plan = schedule(count, seconds)
    assert sum(size for _, size in plan) == count
    offsets = [offset for offset, _ in plan]
    assert offsets == sorted(offsets)
    assert offsets[0] == 0.0
    assert all(0 <= offset < max(seconds, TICK) for offset in offsets)
    if len(plan) > 1:
        gaps = {round(b - a, 9) for a, b in itertools.pairwise(offsets)}
        assert len(gaps) == 1 and gaps.pop() >= TICK  # evenly spaced, never closer than a tick
        assert min(size for _, size in plan) >= MIN_BATCH
        assert max(size for _, size in plan) - min(size for _, size in plan) <= 1


def test_a_few_sockets_or_no_window_close_in_one_batch() -> None:
    assert schedule(MIN_BATCH, 10.0) == [(0.0, MIN_BATCH)]
    assert schedule(5000, 0.0) == [(0.0, 5000)]
    assert schedule(0, 10.0) == []


def test_500_sockets_over_3_seconds_are_spread_to_the_end_of_the_window() -> None:
    plan = schedule(500, 3.0)
    assert len(plan) == 50
    assert plan[-1][0] == pytest.approx(2.94)


def test_reconnect_hints_are_jittered_over_the_window_above_a_floor() -> None:
    rng = random.Random(7)
    hints = [reconnect_after(10.0, rng) for _ in range(2000)]
    assert min(hints) >= RECONNECT_FLOOR
    assert max(hints) <= RECONNECT_FLOOR + 10.0
    assert max(hints) - min(hints) > 9.0  # spread, not one value
    assert len({round(h, 3) for h in hints}) > 1500


def test_the_close_reason_is_the_protocols_json_and_fits_a_close_frame() -> None:
    reason = close_reason(3.2567)
    assert json.loads(reason) == {"reconnect_after_ms": 3257}
    assert len(close_reason(1e9).encode()) <= 123


@pytest.mark.parametrize("raw", ["-1", "nan", "inf"])
def test_a_negative_or_endless_drain_window_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="FANOUT_DRAIN_SECONDS"):
        Settings.from_env({"FANOUT_DRAIN_SECONDS": raw})


def test_a_drain_order_reaches_only_the_workers_of_the_same_server() -> None:
    told: list[str] = []

    def view(server: str) -> ClusterView:
        return ClusterView(
            worker_id=f"w-{server}",
            interval=1.0,
            expiry=3.0,
            publish=lambda channel, message: None,
            snapshot=WorkerFigures,
            on_drain=told.append,
            server=server,
        )

    sibling, stranger = view("host:1:99"), view("host:1:100")
    order = {"type": "drain", "id": "host:7", "server": "host:1:99"}
    message = Message.from_text(json.dumps(order))
    sibling.receive(message)
    stranger.receive(message)
    assert told == ["host:7"]
