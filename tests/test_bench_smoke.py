"""Smoke runs of the load generator against a real Fanout server (behaviour, never timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not (ROOT / "app" / "main.py").exists(), reason="the Fanout server is not there yet"
)


def run_bench(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--no-pin"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    result: dict[str, Any] = json.loads(lines[0])
    assert proc.stderr.strip(), "a human summary is printed on stderr"
    return result


def test_fanout_smoke_100_clients() -> None:
    r = run_bench("fanout", "--subscribers", "100", "--duration", "2", "--warmup", "0.5")
    assert r["scenario"] == "fanout" and r["server"] == "fanout"
    assert r["connect"]["ok"] == 100 and r["connect"]["failed"] == 0
    assert r["messages_sent"] > 0
    assert r["deliveries"] > 0
    assert r["receivers"] == 101  # 100 subscribers + the publisher, which is subscribed too
    assert r["subscribers_without_frames"] == 0
    assert r["lost_connections"] == 0
    assert r["server_rss_kb"] > 0


def test_latency_smoke() -> None:
    r = run_bench(
        "latency", "--subscribers", "50", "--rates", "50", "--duration", "1", "--warmup", "0.3"
    )
    phase = r["phases"][0]
    assert phase["messages_sent"] > 0
    lat = phase["latency"]
    assert lat["count"] > 0
    assert 0 <= lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert phase["subscribers_without_frames"] == 0
    first = phase["latency_first10"]  # each message's earliest 10 % of receivers
    assert 0 < first["count"] < lat["count"]
    assert first["p50_ms"] <= lat["p50_ms"]


def test_fanout_v1_smoke_100_protocol_subscribers() -> None:
    r = run_bench(
        "fanout", "--protocol", "v1", "--subscribers", "100", "--duration", "2", "--warmup", "0.5"
    )
    assert r["params"]["protocol"] == "fanout.v1" and r["params"]["path"] == "/ws"
    assert r["connect"]["ok"] == 100 and r["connect"]["failed"] == 0
    assert r["messages_sent"] > 0 and r["deliveries"] > 0
    assert r["receivers"] == 101
    assert r["subscribers_without_frames"] == 0
    assert r["lost_connections"] == 0


def test_latency_v1_finds_the_timestamp_in_the_json_data() -> None:
    r = run_bench(
        "latency",
        "--protocol",
        "v1",
        "--subscribers",
        "50",
        "--rates",
        "50",
        "--duration",
        "1",
        "--warmup",
        "0.3",
    )
    phase = r["phases"][0]
    assert phase["messages_sent"] > 0
    assert phase["latency"]["count"] > 0
    assert phase["subscribers_without_frames"] == 0


def test_api_publish_smoke_counts_requests_and_deliveries() -> None:
    r = run_bench(
        "api", "--connections", "8", "--subscribers", "2", "--duration", "2", "--warmup", "0.5"
    )
    assert r["scenario"] == "api" and r["params"]["method"] == "POST /api/publish"
    assert r["connections_open"] == 8
    assert r["requests"] > 0 and set(r["statuses"]) == {"200"}
    assert r["errors"] == {} and r["lost_connections"] == 0
    assert r["latency"]["count"] > 0
    # Every answered publish reached both subscribers.
    assert r["delivered_per_subscriber"] == [r["ok_total"], r["ok_total"]]
    assert r["delivery_ratio"] == 1.0


def test_api_healthz_baseline_smoke() -> None:
    r = run_bench("api", "--endpoint", "healthz", "--connections", "8", "--duration", "1")
    assert r["params"]["method"] == "GET /healthz"
    assert r["requests"] > 0 and set(r["statuses"]) == {"200"}
    assert r["delivery_ratio"] is None


def test_memory_smoke_reports_each_steps_connects_and_server_cpu() -> None:
    r = run_bench("memory", "--steps", "100", "300", "--settle", "0.2")
    assert [p["connections"] for p in r["points"]] == [100, 300]
    for point in r["points"]:
        assert point["alive"] == point["connections"]
        assert point["connects_per_s"] > 0
        # The server's CPU over the step's connects, per connect, read from /proc: in clock
        # ticks (10 ms), so a step this small may read 0; present and not negative.
        assert isinstance(point["server_us_per_connect"], float)
        assert point["server_us_per_connect"] >= 0
