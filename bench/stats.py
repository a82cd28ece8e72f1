"""Statistics used by the generator and the side-by-side runner."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks (numpy's default).

    ``p`` is in [0, 100]. Raises ValueError on an empty sequence.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile out of range: {p}")
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return float(data[lo])
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float | int]:
    """p50/p90/p99/p99.9/max/mean in milliseconds, plus the sample count."""
    if not samples_ns:
        return {"count": 0}
    data = sorted(samples_ns)
    ms = 1e6

    def pct(p: float) -> float:
        return round(percentile(data, p) / ms, 4)

    return {
        "count": len(data),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": round(data[-1] / ms, 4),
        "mean_ms": round(sum(data) / len(data) / ms, 4),
    }


def median_spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median of repeated runs with its spread (min, max, and max-min relative to the median)."""
    if not values:
        return {"n": 0}
    med = percentile(values, 50)
    lo, hi = min(values), max(values)
    rel = (hi - lo) / med if med else 0.0
    return {"n": len(values), "median": med, "min": lo, "max": hi, "spread": round(rel, 4)}


def merge_samples(chunks: Sequence[Sequence[int]], limit: int = 2_000_000) -> list[int]:
    """Concatenate latency samples from several processes, keeping at most ``limit``
    (evenly strided so every process stays represented)."""
    total = sum(len(c) for c in chunks)
    out: list[int] = []
    if total <= limit:
        for c in chunks:
            out.extend(c)
        return out
    step = total / limit
    for c in chunks:
        k = max(1, round(len(c) / step))
        stride = max(1, len(c) // k)
        out.extend(c[::stride])
    return out


def first_share(
    samples_ns: Sequence[Sequence[int]], keys: Sequence[Sequence[int]], share: float = 0.1
) -> list[int]:
    """Each message's earliest ``share`` of receivers: the latencies in ``samples_ns`` are
    grouped by the message they timed (``keys``, aligned with them, one list per client
    process), and of each message only the lowest ``ceil(share * receivers)`` are kept.

    The whole-fan-out percentiles mix the first socket written with the thousandth; this
    isolates how soon a message reaches its first subscribers."""
    by_key: dict[int, list[int]] = {}
    for lat, key in zip(samples_ns, keys, strict=True):
        for t, k in zip(lat, key, strict=True):
            by_key.setdefault(k, []).append(t)
    out: list[int] = []
    for group in by_key.values():
        group.sort()
        out.extend(group[: max(1, math.ceil(share * len(group)))])
    return out
