"""FANOUT_GC_THRESHOLD: parsed and refused like every setting, applied in the served worker."""

from __future__ import annotations

import gc

import pytest

from app.config import Settings, SettingsError
from tests.support.servers import StartServer
from tests.support.stats import fetch_stats


def test_gc_threshold_parses_one_to_three_whole_numbers() -> None:
    assert Settings.from_env({}).gc_thresholds() == (700, 10, 100)
    python_own = {"FANOUT_GC_THRESHOLD": "700,10,10"}
    assert Settings.from_env(python_own).gc_thresholds() == (700, 10, 10)
    setting = {"FANOUT_GC_THRESHOLD": " 50_000, 20 ,10 "}
    assert Settings.from_env(setting).gc_thresholds() == (50_000, 20, 10)
    assert Settings.from_env({"FANOUT_GC_THRESHOLD": "2000"}).gc_thresholds() == (2000,)


@pytest.mark.parametrize("raw", ["a,b", "1,2,3,4", "-5", "50000,,10", "1.5"])
def test_gc_threshold_refuses_what_gc_set_threshold_would_not_take(raw: str) -> None:
    with pytest.raises(SettingsError, match="FANOUT_GC_THRESHOLD"):
        Settings.from_env({"FANOUT_GC_THRESHOLD": raw})


async def test_the_served_worker_applies_the_thresholds(start_server: StartServer) -> None:
    tuned = start_server({"FANOUT_GC_THRESHOLD": "50000,20,10"})
    default = start_server()
    python_own = start_server({"FANOUT_GC_THRESHOLD": "700,10,10"})
    tuned_gc = (await fetch_stats(tuned))["workers"][0]["gc"]
    assert tuned_gc["thresholds"] == [50000, 20, 10]
    assert tuned_gc["frozen_objects"] > 0  # set next to gc.freeze, which still ran
    assert (await fetch_stats(default))["workers"][0]["gc"]["thresholds"] == [700, 10, 100]
    # Python's own thresholds are one setting away.
    assert (await fetch_stats(python_own))["workers"][0]["gc"]["thresholds"] == list(
        gc.get_threshold()
    )
