"""``python -m bench report`` turns a results file into markdown and plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from bench import report


def fanout_result(server: str, n: int, rate: float) -> dict[str, Any]:
    return {"scenario": "fanout", "server": server, "deliveries_per_s": rate, "params": {}}


def latency_result(server: str, p99: float) -> dict[str, Any]:
    lat = {"count": 10, "p50_ms": p99 / 2, "p99_ms": p99, "max_ms": p99 * 2}
    return {"scenario": "latency", "server": server, "phases": [{"rate": 20.0, "latency": lat}]}


def memory_result(server: str, kb: float) -> dict[str, Any]:
    pts = [{"connections": n, "rss_kb": 30000 + kb * n, "alive": n} for n in (1000, 10000)]
    return {
        "scenario": "memory",
        "server": server,
        "baseline_rss_kb": 30000,
        "points": pts,
        "kb_per_conn": kb,
        "connects_per_s": 1000.0,
    }


def test_report_writes_table_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = []
    for rep in range(3):
        for server, f in (("fanout", 1.0), ("node-ws", 0.5)):
            for n in (100, 1000):
                runs.append(
                    {
                        "key": f"fanout-{n}",
                        "server": server,
                        "repeat": rep,
                        "result": fanout_result(server, n, 100_000 * f + rep),
                    }
                )
            runs.append(
                {
                    "key": "latency",
                    "server": server,
                    "repeat": rep,
                    "result": latency_result(server, 2.0 / f),
                }
            )
            runs.append(
                {
                    "key": "memory",
                    "server": server,
                    "repeat": rep,
                    "result": memory_result(server, 20 * f),
                }
            )
    runs.append({"key": "memory", "server": "node-ws", "repeat": 3, "error": "RuntimeError: x"})
    doc = {
        "started": "2026-01-01T00:00:00+00:00",
        "command": "python -m bench compare --quick",
        "machine": {
            "cpu": "test cpu",
            "cores": 2,
            "memory_gib": 1.0,
            "kernel": "k",
            "os": "o",
            "fd_limit": 1024,
            "versions": {"python": "3"},
            "commit": "abc",
        },
        "servers": {"fanout": "Fanout", "node-ws": "Node"},
        "plan": [{"key": "fanout-100", "scenario": "fanout", "params": {}}],
        "repeats": 3,
        "pinning": "none",
        "runs": runs,
    }
    src = tmp_path / "compare-x.json"
    src.write_text(json.dumps(doc))
    report.main(argparse.Namespace(input=str(src), docs=str(tmp_path / "docs")))
    md = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "| fan-out deliveries/s, 1,000 subscribers | 100,001 ±0% | 50,001 ±0% (x0.50) |" in md
    assert "| latency p99 ms, 20 msg/s to 1,000 | 2.00 ±0% | 4.00 ±0% (x2.00) |" in md
    assert "RuntimeError: x" in md and "test cpu" in md
    for name in ("bench-throughput.png", "bench-latency.png", "bench-memory.png"):
        assert (tmp_path / "docs" / name).stat().st_size > 1000
