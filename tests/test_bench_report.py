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


def broker_doc() -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for rep in range(3):
        for key, server, result in (
            ("fanout-1000", "fanout-before", fanout_result("fanout-before", 1000, 2_000_000)),
            ("fanout-1000", "fanout", fanout_result("fanout", 1000, 2_000_000 + rep)),
            ("fanout-v1-1000", "fanout", fanout_result("fanout", 1000, 1_800_000 + rep)),
            (
                "api-publish",
                "fanout",
                {
                    "scenario": "api",
                    "requests_per_s": 15_000.0,
                    "latency": {"count": 1, "p50_ms": 2.0, "p99_ms": 8.0},
                    "server_cpu_us_per_request": 50.0,
                    "delivery_ratio": 1.0,
                },
            ),
            (
                "api-healthz",
                "fanout",
                {
                    "scenario": "api",
                    "requests_per_s": 25_000.0,
                    "latency": {"count": 1, "p50_ms": 1.0, "p99_ms": 4.0},
                    "server_cpu_us_per_request": 35.0,
                    "delivery_ratio": None,
                },
            ),
        ):
            runs.append(
                {
                    "key": key,
                    "server": server,
                    "repeat": rep,
                    "busy_before": 0.05,
                    "loadavg_before": 1.0,
                    "result": result,
                }
            )
    return {
        "started": "2026-01-01T00:00:00+00:00",
        "command": "python -m bench compare --servers fanout-before fanout --only fanout-1000",
        "machine": {"cpu": "test cpu", "cores": 2, "commit": "abc"},
        "servers": {"fanout-before": "Fanout at /tmp/main-export, 1 worker", "fanout": "Fanout"},
        "repeats": 3,
        "runs": runs,
    }


def test_broker_section_is_spliced_into_the_existing_page(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    page = "# Benchmarks\n\n## Results\n\nkept\n\n## How this was measured\n\nalso kept\n"
    (docs / "benchmarks.md").write_text(page)
    src = tmp_path / "compare-b.json"
    src.write_text(json.dumps(broker_doc()))
    args = argparse.Namespace(input=str(src), docs=str(docs), section="broker")
    report.main(args)
    md = (docs / "benchmarks.md").read_text()
    assert md.count(report.BROKER_TITLE) == 1
    assert md.index("## Results") < md.index(report.BROKER_TITLE) < md.index("## How this")
    assert "kept" in md and "also kept" in md
    assert "| fanout.v1 `/ws` deliveries/s, 1,000 subscribers | - | 1,800,001 ±0% |" in md
    assert "| fanout.v1 / raw, 1,000 subscribers (per repeat) | - | 0.90 ±0% |" in md
    assert "| `POST /api/publish` requests/s | - | 15,000 ±0% |" in md
    assert "| `GET /healthz` server CPU us/request | - | 35.0 ±0% |" in md
    assert "with `fanout` (x1.00)" in md  # raw before/after
    assert "| `POST /api/publish` requests/s, keep-alive | ≥ 10,000 | 15,000 | met |" in md
    assert "| fanout.v1 / raw `/ws/broadcast`, same run | ≥ 0.80 | 0.90 | met |" in md
    # Again: replaced in place, not appended.
    report.main(args)
    assert (docs / "benchmarks.md").read_text() == md
