"""GcMonitor: collections and pauses per generation, for /stats."""

from __future__ import annotations

import gc

from app.services.gc_monitor import GcMonitor


def test_gc_monitor_times_collections_until_stopped() -> None:
    monitor = GcMonitor()
    monitor.start()
    gc.collect()
    gc.collect(0)
    snap = monitor.snapshot()
    assert snap["gen2"]["collections"] >= 1
    assert snap["gen0"]["collections"] >= 1
    assert snap["gen2"]["longest_ms"] >= 0
    monitor.stop()
    assert monitor._on_gc not in gc.callbacks
    gc.collect()
    assert monitor.snapshot()["gen2"]["collections"] == snap["gen2"]["collections"]
