"""``python -m bench report``: docs/benchmarks.md and docs/bench-*.png from real runs.

Reads the newest ``bench/results/compare-*.json`` (written by ``python -m bench compare``)
and the ``extra-*.json`` beside it (single scenarios saved with ``--save``)."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import stats
from bench.servers import REPO

RESULTS = REPO / "bench" / "results"
BASE = "fanout"
GOALS = {
    "deliveries": 1_000_000,
    "p99_ms": 2.0,
    "kb_per_conn": 12.0,
    "connections": 40_000,
}

Runs = dict[str, dict[str, list[dict[str, Any]]]]  # key -> server -> results


def load(path: Path | None) -> tuple[dict[str, Any], Path]:
    if path is None:
        found = sorted(RESULTS.glob("compare-*.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SystemExit("no bench/results/compare-*.json: run `python -m bench compare` first")
        path = found[-1]
    return json.loads(path.read_text()), path


def group(doc: dict[str, Any]) -> Runs:
    out: Runs = defaultdict(lambda: defaultdict(list))
    for run in doc["runs"]:
        if "result" in run:
            out[run["key"]][run["server"]].append(run["result"])
    return out


def med(values: list[float | None]) -> dict[str, float | int]:
    return stats.median_spread([v for v in values if v is not None])


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}{unit}"
    if abs(x) >= 10:
        return f"{x:.1f}{unit}"
    return f"{x:.2f}{unit}"


def cell(m: dict[str, Any], base: dict[str, Any] | None, unit: str = "") -> str:
    if not m.get("n"):
        return "-"
    s = f"{fmt(m['median'], unit)} ±{100 * m['spread'] / 2:.0f}%"
    if base and base.get("n") and base["median"]:
        s += f" (x{m['median'] / base['median']:.2f})"
    return s


def metric_rows(runs: Runs, servers: list[str]) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    rows: list[tuple[str, dict[str, dict[str, Any]]]] = []

    def add(label: str, key: str, get: Callable[[dict[str, Any]], float | None]) -> None:
        if key not in runs:
            return
        rows.append((label, {s: med([get(r) for r in runs[key].get(s, [])]) for s in servers}))

    for key in sorted((k for k in runs if k.startswith("fanout-")), key=lambda k: int(k[7:])):
        n = int(key[7:])
        add(f"fan-out deliveries/s, {n:,} subscribers", key, lambda r: r["deliveries_per_s"])
    if "latency" in runs:
        rates = sorted(
            {ph["rate"] for rs in runs["latency"].values() for r in rs for ph in r["phases"]}
        )
        for rate in rates:
            for pct in ("p50_ms", "p99_ms"):

                def get(r: dict[str, Any], rate: float = rate, pct: str = pct) -> float | None:
                    for ph in r["phases"]:
                        if ph["rate"] == rate and ph["latency"] and ph["latency"].get("count"):
                            return float(ph["latency"][pct])
                    return None

                add(f"latency {pct[:3]} ms, {rate:g} msg/s to 1,000", "latency", get)
    add("churn: connects/s while broadcasting", "churn", lambda r: r["churn_connects_per_s"])
    add("churn: stable subscribers' delivery ratio", "churn", lambda r: r["delivery_ratio"])
    add(
        "churn: stable subscribers' p99 ms",
        "churn",
        lambda r: (r["latency"] or {}).get("p99_ms"),
    )
    add(
        "slow consumers (10% stalled): others' throughput after/before",
        "slow",
        lambda r: r["fast_throughput_ratio"],
    )
    add(
        "slow consumers: others' p99 ms after",
        "slow",
        lambda r: (r["after"]["latency"] or {}).get("p99_ms"),
    )
    add("KB per idle connection", "memory", lambda r: r["kb_per_conn"])
    add("RSS MiB with 10k idle connections", "memory", lambda r: r["points"][-1]["rss_kb"] / 1024)
    add("connects/s (5,000 connections)", "connect", lambda r: r["connects_per_s"])
    add(
        "connects/s (5k more on top of 5k open)",
        "memory",
        lambda r: r.get("connects_per_s"),
    )
    return rows


def table(runs: Runs, servers: list[str]) -> str:
    lines = [
        "| figure | " + " | ".join(servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    for label, cols in metric_rows(runs, servers):
        base = cols.get(BASE)
        lines.append(
            f"| {label} | "
            + " | ".join(cell(cols[s], base if s != BASE else None) for s in servers)
            + " |"
        )
    return "\n".join(lines)


def plots(runs: Runs, servers: list[str], docs: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []

    def errbar(ax: Any, xs: list[float], ms: list[dict[str, Any]], label: str, **kw: Any) -> None:
        pts = [(x, m) for x, m in zip(xs, ms, strict=True) if m.get("n")]
        if not pts:
            return
        x = [p[0] for p in pts]
        y = [p[1]["median"] for p in pts]
        lo = [p[1]["median"] - p[1]["min"] for p in pts]
        hi = [p[1]["max"] - p[1]["median"] for p in pts]
        kw.setdefault("marker", "o")
        ax.errorbar(x, y, yerr=[lo, hi], capsize=3, label=label, **kw)

    # Throughput vs subscribers
    keys = sorted((k for k in runs if k.startswith("fanout-")), key=lambda k: int(k[7:]))
    if keys:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        xs = [float(k[7:]) for k in keys]
        for s in servers:
            ms = [med([r["deliveries_per_s"] for r in runs[k].get(s, [])]) for k in keys]
            errbar(ax, xs, ms, s)
        ax.set_xscale("log")
        ax.set_xlabel("subscribers")
        ax.set_ylabel("deliveries / s (median, min-max)")
        ax.set_title("Fan-out throughput, 64-byte messages")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(docs / "bench-throughput.png", dpi=110)
        plt.close(fig)
        made.append("bench-throughput.png")

    if "latency" in runs:
        rates = sorted(
            {ph["rate"] for rs in runs["latency"].values() for r in rs for ph in r["phases"]}
        )
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for i, s in enumerate(servers):
            if s not in runs["latency"]:
                continue
            for pct, style in (("p50_ms", "--"), ("p99_ms", "-")):
                ms = []
                for rate in rates:
                    vals = [
                        ph["latency"][pct]
                        for r in runs["latency"][s]
                        for ph in r["phases"]
                        if ph["rate"] == rate and ph["latency"] and ph["latency"].get("count")
                    ]
                    ms.append(med(vals))
                errbar(
                    ax,
                    rates,
                    ms,
                    f"{s} {pct[:3]}",
                    linestyle=style,
                    color=f"C{i}",
                    fillstyle="none" if pct == "p50_ms" else "full",
                )
        ax.set_yscale("log")
        ax.set_xlabel("published messages / s (to 1,000 subscribers)")
        ax.set_ylabel("publish-to-receive latency, ms")
        ax.set_title("Latency percentiles vs rate (hollow, dashed: p50; filled: p99)")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(docs / "bench-latency.png", dpi=110)
        plt.close(fig)
        made.append("bench-latency.png")

    if "memory" in runs:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for s in servers:
            rs = runs["memory"].get(s, [])
            if not rs:
                continue
            xs = [0.0] + [float(p["connections"]) for p in rs[0]["points"]]
            ms = [med([r["baseline_rss_kb"] / 1024 for r in rs])] + [
                med([r["points"][i]["rss_kb"] / 1024 for r in rs if len(r["points"]) > i])
                for i in range(len(rs[0]["points"]))
            ]
            errbar(ax, xs, ms, s)
        ax.set_xlabel("idle connections")
        ax.set_ylabel("server RSS, MiB (all processes)")
        ax.set_title("Memory vs connections")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(docs / "bench-memory.png", dpi=110)
        plt.close(fig)
        made.append("bench-memory.png")
    return made


def goals(runs: Runs, extras: list[dict[str, Any]]) -> str:
    def m(key: str, get: Callable[[dict[str, Any]], float | None]) -> float | None:
        got = [get(r) for r in runs.get(key, {}).get(BASE, [])]
        vals = [v for v in got if v is not None]
        return stats.percentile(vals, 50) if vals else None

    def p99_20(r: dict[str, Any]) -> float | None:
        for ph in r["phases"]:
            if ph["rate"] == 20 and ph["latency"] and ph["latency"].get("count"):
                return float(ph["latency"]["p99_ms"])
        return None

    thr = m("fanout-1000", lambda r: r["deliveries_per_s"])
    p99 = m("latency", p99_20)
    kb = m("memory", lambda r: r["kb_per_conn"])
    maxc = max(
        (e["alive"] for e in extras if e.get("scenario") == "maxconn" and "fanout" in e["server"]),
        default=None,
    )

    def row(label: str, goal: str, val: float | None, ok: bool | None, unit: str = "") -> str:
        verdict = "-" if ok is None else ("met" if ok else "not met")
        return f"| {label} | {goal} | {fmt(val, unit)} | {verdict} |"

    return "\n".join(
        [
            "| goal (Fanout, one worker core unless said) | target | measured (median) | |",
            "|---|---|---|---|",
            row(
                "deliveries/s, 1k subscribers, 64 B",
                "≥ 1,000,000",
                thr,
                None if thr is None else thr >= GOALS["deliveries"],
            ),
            row(
                "p99 latency at 20 msg/s, 1k subscribers",
                "≤ 2 ms",
                p99,
                None if p99 is None else p99 <= GOALS["p99_ms"],
                " ms",
            ),
            row(
                "memory per idle connection",
                "≤ 12 KB",
                kb,
                None if kb is None else kb <= GOALS["kb_per_conn"],
                " KB",
            ),
            row(
                "concurrent connections (any worker count)",
                "40,000",
                maxc,
                None if maxc is None else maxc >= GOALS["connections"],
            ),
        ]
    )


def extras_section(extras: list[dict[str, Any]]) -> str:
    if not extras:
        return "_No single-scenario runs saved (`--save`)._"
    from bench.summary import summarize

    lines = []
    for e in extras:
        lines.append(f"- `{e.get('command', '?')}`  \n  {summarize(e)}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    doc, path = load(Path(args.input) if args.input else None)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    runs = group(doc)
    servers = list(doc["servers"])
    extras = [json.loads(p.read_text()) for p in sorted(path.parent.glob("extra-*.json"))]
    made = plots(runs, servers, docs)
    mach = doc["machine"]
    ver = ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
    failed = [r for r in doc["runs"] if "error" in r]
    plan_lines = "\n".join(
        f"  - `{p['key']}`: {p['scenario']} {json.dumps(p['params'])}" for p in doc["plan"]
    )
    server_lines = "\n".join(f"- **{k}**: {v}" for k, v in doc["servers"].items())
    src = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    n_runs, took = len(doc["runs"]), doc.get("elapsed_s", "?")
    cpu = f"{mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB"
    cmds = []
    server_dir = mach.get("server_dir")
    compare_cmd = doc["command"]
    if server_dir and Path(server_dir) != REPO:
        commit = mach.get("server_commit") or "HEAD"
        cmds.append(f"mkdir -p {server_dir} && git archive {commit} | tar -x -C {server_dir}")
        compare_cmd = f"BENCH_FANOUT_DIR={server_dir} BENCH_FANOUT_COMMIT={commit} {compare_cmd}"
    cmds.append(compare_cmd)
    cmds.extend(str(e["command"]) for e in extras if e.get("command"))
    cmds.append("python -m bench report")
    commands = "\n".join(cmds)
    busy = [r["busy_before"] for r in doc["runs"] if "busy_before" in r]
    noisy = sum(1 for b in busy if b > 0.15)
    busy_note = (
        f"\n  In this run {noisy} of {len(busy)} runs started on a machine still more than 15%"
        " busy with other work."
        if busy
        else ""
    )
    md = f"""# Benchmarks

Generated by `python -m bench report` from `{src}`
(started {doc["started"]}, {n_runs} runs in {took} s). Do not edit by hand:
re-run the commands below and regenerate.

## Machine

- CPU: {cpu}; {mach["os"]}, kernel {mach["kernel"]}
- fd limit per process: {mach["fd_limit"]}
- {ver}
- Fanout commit: `{mach.get("server_commit") or mach["commit"]}`
- {doc["pinning"]}; multi-worker servers unpinned.

## Servers

{server_lines}

## Results

Median of {doc["repeats"]} runs per cell, servers alternating; `±` is half the min-max spread
relative to the median; `(xN)` is the ratio to Fanout with one worker (for latency and memory,
lower is better). 64-byte binary messages; one publisher, also subscribed, with a window of 32
messages in flight (fan-out) or a fixed rate (latency); every client frame masked, every server
frame counted by parsing its header.

{table(runs, servers)}

Multi-worker Fanout (`fanout-w*`) is not pinned (its workers and the clients share both
cores); its workers share broadcasts through its default `FANOUT_BACKEND=local://`.

![throughput](bench-throughput.png)
![latency](bench-latency.png)
![memory](bench-memory.png)

## Goals (issue 4)

{goals(runs, extras)}

## Other scenarios

{extras_section(extras)}

## How this was measured

- Load generator: `bench/` (asyncio + uvloop, raw `asyncio.Protocol` clients doing the HTTP
  upgrade themselves, several client processes, loopback source addresses 127.0.0.2+).
- Latency is publish-to-receive: the publisher writes `time.time_ns()` into the payload just
  before sending; the subscribers' sockets carry the kernel's receive timestamp
  (`SO_TIMESTAMPNS`), so the figure excludes the generator's own processing delay. The same
  percentiles taken when the generator parses the frame are in the JSON as `latency_app`.
- The machine may be shared: before each run the runner waits (bounded) for the machine to be
  idle and records how busy it still was (`busy_before`, `loadavg_before` in the JSON); the
  spread column shows how much runs disagreed.{busy_note}
- Memory is the server's RSS summed over its process tree (`/proc/PID/status`), before and after
  opening the idle connections; KB per connection = growth / connections.
- Every server writes each message to its subscribers one socket after the other, so at
  1,000 subscribers the last one waits for ~1,000 loopback sends: that, not the generator,
  sets the latency floor on this machine.
- Plan:
{plan_lines}

## Commands

```
{commands}
```
"""
    if failed:
        md += (
            "\n## Failed runs\n\n"
            + "\n".join(
                f"- {r['key']} on {r['server']} (repeat {r['repeat'] + 1}): {r['error']}"
                for r in failed
            )
            + "\n"
        )
    (docs / "benchmarks.md").write_text(md)
    print(json.dumps({"markdown": str(docs / "benchmarks.md"), "plots": made, "source": str(path)}))
