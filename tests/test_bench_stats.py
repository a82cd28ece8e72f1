"""Unit tests of the generator's statistics (percentiles, medians with spread)."""

from __future__ import annotations

import pytest

from bench import stats


def test_percentile_interpolates_like_numpy_linear() -> None:
    data = [1, 2, 3, 4]
    assert stats.percentile(data, 0) == 1
    assert stats.percentile(data, 100) == 4
    assert stats.percentile(data, 50) == 2.5
    assert stats.percentile(data, 25) == pytest.approx(1.75)
    assert stats.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_percentile_unsorted_and_single() -> None:
    assert stats.percentile([5, 1, 3], 50) == 3
    assert stats.percentile([7], 99) == 7


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1], 101)


def test_latency_summary_in_ms() -> None:
    samples = [i * 1_000_000 for i in range(1, 101)]  # 1..100 ms
    s = stats.latency_summary(samples)
    assert s["count"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == 100
    assert s["mean_ms"] == pytest.approx(50.5)
    assert stats.latency_summary([]) == {"count": 0}


def test_median_spread() -> None:
    m = stats.median_spread([100.0, 90.0, 110.0])
    assert m["median"] == 100 and m["min"] == 90 and m["max"] == 110
    assert m["spread"] == pytest.approx(0.2)
    assert stats.median_spread([])["n"] == 0


def test_merge_samples_keeps_every_process() -> None:
    a, b = list(range(1000)), list(range(10))
    merged = stats.merge_samples([a, b], limit=110)
    assert len(merged) <= 120
    assert any(x < 10 for x in merged[-10:])
    assert stats.merge_samples([[1], [2, 3]]) == [1, 2, 3]


def test_first_share_keeps_each_messages_earliest_receivers() -> None:
    # Two client processes; message 1 reached 20 receivers, message 2 reached 10.
    lat_a, keys_a = [*range(100, 110), *range(500, 505)], [1] * 10 + [2] * 5
    lat_b, keys_b = [*range(10, 20), *range(900, 905)], [1] * 10 + [2] * 5
    first = stats.first_share([lat_a, lat_b], [keys_a, keys_b], share=0.1)
    assert sorted(first) == [10, 11, 500]  # 10 % of 20 is 2; 10 % of 10 is 1
