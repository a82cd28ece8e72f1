"""`python -m bench many` end to end on a small scale: 200 connections over 2 workers, each
answering a ping and receiving one HTTP-published broadcast (behaviour, never timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.many import ManyConfig, sources

ROOT = Path(__file__).resolve().parent.parent


def test_the_plan_reports_at_quarters_and_always_ends_at_the_total() -> None:
    assert ManyConfig(connections=100_000).plan() == [25_000, 50_000, 75_000, 100_000]
    assert ManyConfig(connections=300, steps=[100, 500]).plan() == [100, 300]
    assert len(sources(100_000)) * 16_000 >= 100_000


def test_many_connections_across_workers_answer_pings_and_get_the_broadcast() -> None:
    args = ["--connections", "200", "--workers", "2", "--steps", "100", "--nofile", "4096"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "many",
            *args,
            "--check-timeout",
            "15",
            "--time-limit",
            "60",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["connections"] for s in r["steps"]] == [100, 200]
    assert r["stopped"] == "" and r["opened"] == r["open_at_end"] == 200
    assert all(s["workers_rss_kb"] > 0 and s["connects_per_s"] for s in r["steps"])
    assert len(r["steps"][-1]["worker_fds"]) >= 2  # the workers, each seen in /proc
    assert r["ping"]["answered"] == r["ping"]["open"] == 200
    assert r["broadcast"]["status"] == 200
    assert r["broadcast"]["received"] == r["broadcast"]["open"] == 200
    # prlimit set the limit every server process started with (lowering needs no privilege).
    assert r["limits"]["server_nofile_soft_hard"]
    assert set(r["limits"]["server_nofile_soft_hard"]) == {"4096 4096"}
    assert r["close"]["worker_fds_after"] < r["close"]["worker_fds_before_ramp"] + 40
    assert "[many]" in proc.stderr
