"""``python -m bench report``: docs/benchmarks.md and docs/bench-*.png from real runs.

Reads the newest ``bench/results/compare-*.json`` (written by ``python -m bench compare``)
and the ``extra-*.json`` beside it (single scenarios saved with ``--save``)."""

from __future__ import annotations

import argparse
import json
import re
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
RAW_FANOUT = re.compile(r"fanout-(\d+)$")
"""Plan keys of raw fan-out runs (``fanout-1000``; not ``fanout-v1-1000``)."""
BROKER_TITLE = "## fanout.v1 and the HTTP API"
BROKER_GOALS = {"v1_deliveries": 1_000_000, "v1_vs_raw": 0.8, "api_requests": 10_000}


def fanout_keys(runs: Runs | dict[str, Any]) -> list[str]:
    """Raw fan-out keys, by subscriber count."""
    keys = [k for k in runs if RAW_FANOUT.match(k)]
    return sorted(keys, key=lambda k: int(k[7:]))


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

    for key in fanout_keys(runs):
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

            def first(r: dict[str, Any], rate: float = rate) -> float | None:
                for ph in r["phases"]:
                    lat = ph.get("latency_first10") or {}
                    if ph["rate"] == rate and lat.get("count"):
                        return float(lat["p50_ms"])
                return None

            add(f"latency p50 ms, first 10 % of receivers, {rate:g} msg/s", "latency", first)
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
    for key in sorted(k for k in runs if k.startswith("connect-") and k[8:].isdigit()):
        # The plan names these connect-N (runner.py); handshakes into N fresh sockets.
        add(f"connects/s ({int(key[8:]):,} connections)", key, lambda r: r["connects_per_s"])
    add(
        "connects/s (5k more on top of 5k open)",
        "memory",
        lambda r: r.get("connects_per_s"),
    )
    add(
        "server CPU µs per connect (5k more on top of 5k open)",
        "memory",
        lambda r: r["points"][-1].get("server_us_per_connect"),
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
    keys = fanout_keys(runs)
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


def is_broker_key(key: str) -> bool:
    return key.startswith(("fanout-v1-", "api-"))


def _by_repeat(doc: dict[str, Any], key: str, server: str) -> dict[int, dict[str, Any]]:
    return {
        r["repeat"]: r["result"]
        for r in doc["runs"]
        if r["key"] == key and r["server"] == server and "result" in r
    }


def broker_rows(doc: dict[str, Any], servers: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Figures of issue 9's performance goals, per server: raw vs fanout.v1 fan-out in the
    same run, and the HTTP API beside the plain JSON route."""
    runs = group(doc)
    rows: list[tuple[str, dict[str, Any]]] = []

    def add(label: str, key: str, get: Callable[[dict[str, Any]], float | None]) -> None:
        if key in runs:
            rows.append((label, {s: med([get(r) for r in runs[key].get(s, [])]) for s in servers}))

    for key in sorted((k for k in runs if k.startswith("fanout-v1-")), key=lambda k: int(k[10:])):
        n = int(key[10:])
        raw = f"fanout-{n}"
        add(f"raw `/ws/broadcast` deliveries/s, {n:,} subscribers", raw, _deliveries)
        add(f"fanout.v1 `/ws` deliveries/s, {n:,} subscribers", key, _deliveries)
        add(f"raw: server CPU ns/delivery, {n:,} subscribers", raw, _ns_per_delivery)
        add(f"fanout.v1: server CPU ns/delivery, {n:,} subscribers", key, _ns_per_delivery)
        ratios: dict[str, Any] = {}
        for s in servers:
            a, b = _by_repeat(doc, key, s), _by_repeat(doc, raw, s)
            ratios[s] = med(
                [a[i]["deliveries_per_s"] / b[i]["deliveries_per_s"] for i in a if i in b]
            )
        rows.append((f"fanout.v1 / raw, {n:,} subscribers (per repeat)", ratios))
    for key, what in (("api-publish", "`POST /api/publish`"), ("api-healthz", "`GET /healthz`")):
        add(f"{what} requests/s", key, lambda r: r["requests_per_s"])
        add(f"{what} p50 ms", key, lambda r: (r["latency"] or {}).get("p50_ms"))
        add(f"{what} p99 ms", key, lambda r: (r["latency"] or {}).get("p99_ms"))
        add(
            f"{what} server CPU us/request",
            key,
            lambda r: r.get("server_cpu_us_per_request"),
        )
    add(
        "`POST /api/publish`: publishes delivered to each subscriber (ratio)",
        "api-publish",
        lambda r: r.get("delivery_ratio"),
    )
    return rows


def _deliveries(r: dict[str, Any]) -> float | None:
    return float(r["deliveries_per_s"])


def _ns_per_delivery(r: dict[str, Any]) -> float | None:
    """The server's CPU time per delivery: what a run costs, less sensitive than the rate
    to other work on a shared machine."""
    cpu, rate = r.get("server_cpu_util"), r.get("deliveries_per_s")
    return 1e9 * cpu / rate if cpu and rate else None


def broker_goals(doc: dict[str, Any]) -> str:
    runs = group(doc)

    def m(key: str, get: Callable[[dict[str, Any]], float | None]) -> float | None:
        vals = [v for v in (get(r) for r in runs.get(key, {}).get(BASE, [])) if v is not None]
        return stats.percentile(vals, 50) if vals else None

    v1 = m("fanout-v1-1000", _deliveries)
    a, b = _by_repeat(doc, "fanout-v1-1000", BASE), _by_repeat(doc, "fanout-1000", BASE)
    pairs = [a[i]["deliveries_per_s"] / b[i]["deliveries_per_s"] for i in a if i in b]
    ratio = stats.percentile(pairs, 50) if pairs else None
    api = m("api-publish", lambda r: r["requests_per_s"])

    def row(label: str, goal: str, val: float | None, target: float) -> str:
        verdict = "-" if val is None else ("met" if val >= target else "not met")
        return f"| {label} | {goal} | {fmt(val)} | {verdict} |"

    return "\n".join(
        [
            "| goal (Fanout, one worker core) | target | measured (median) | |",
            "|---|---|---|---|",
            row(
                "fanout.v1 deliveries/s, 1k subscribers, 64 B JSON data",
                "≥ 1,000,000",
                v1,
                BROKER_GOALS["v1_deliveries"],
            ),
            row(
                "fanout.v1 / raw `/ws/broadcast`, same run",
                "≥ 0.80",
                ratio,
                BROKER_GOALS["v1_vs_raw"],
            ),
            row(
                "`POST /api/publish` requests/s, keep-alive",
                "≥ 10,000",
                api,
                BROKER_GOALS["api_requests"],
            ),
        ]
    )


def broker_section(doc: dict[str, Any], path: Path, notes: str = "") -> str:
    """``## fanout.v1 and the HTTP API``: the side-by-side figures of one compare run."""
    runs = group(doc)
    keys = [k for k in runs if is_broker_key(k) or RAW_FANOUT.match(k)]
    servers = [s for s in doc["servers"] if any(s in runs[k] for k in keys)]
    lines = [
        "| figure | " + " | ".join(servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    for label, cols in broker_rows(doc, servers):
        base = cols.get(BASE)
        ratio_row = "/ raw" in label or "ratio" in label
        lines.append(
            f"| {label} | "
            + " | ".join(cell(cols[s], None if ratio_row or s == BASE else base) for s in servers)
            + " |"
        )
    before = ""
    if "fanout-before" in servers and "fanout-1000" in runs:
        b = med([r["deliveries_per_s"] for r in runs["fanout-1000"].get("fanout-before", [])])
        a = med([r["deliveries_per_s"] for r in runs["fanout-1000"].get(BASE, [])])
        if b.get("n") and a.get("n"):
            before = (
                f"\nRaw fan-out (`/ws/broadcast`, 1,000 subscribers) before and after the broker"
                f" changes in the same run: {cell(b, None)} deliveries/s with `fanout-before`"
                f" -> {cell(a, None)} with `fanout` (x{a['median'] / b['median']:.2f}).\n"
            )
    busy = [r["busy_before"] for r in doc["runs"] if "busy_before" in r]
    loads = [r["loadavg_before"] for r in doc["runs"] if "loadavg_before" in r]
    busy_note = (
        f"Machine busy-ness before each run (other work on the shared machine): median "
        f"{stats.percentile(busy, 50):.0%}, max {max(busy):.0%} of both cores; "
        f"{sum(1 for x in busy if x > 0.15)} of {len(busy)} runs started above 15%; "
        f"1-minute load average {min(loads):.2f}-{max(loads):.2f}."
        if busy and loads
        else ""
    )
    src = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    mach = doc["machine"]
    cmds = []
    server_dir = mach.get("server_dir")
    compare_cmd = doc["command"]
    if server_dir and Path(server_dir) != REPO:
        commit = mach.get("server_commit") or "HEAD"
        cmds.append(f"mkdir -p {server_dir} && git archive {commit} | tar -x -C {server_dir}")
        compare_cmd = f"BENCH_FANOUT_DIR={server_dir} BENCH_FANOUT_COMMIT={commit} {compare_cmd}"
    if "fanout-before" in doc["servers"]:
        base_dir = doc["servers"]["fanout-before"].split(" at ", 1)[-1].split(",", 1)[0]
        cmds.append(f"mkdir -p {base_dir} && git archive main | tar -x -C {base_dir}")
        if "BENCH_BASELINE_DIR" not in compare_cmd:
            compare_cmd = f"BENCH_BASELINE_DIR={base_dir} {compare_cmd}"
    cmds.append(compare_cmd)
    cmds.append(f"python -m bench report --section broker --input {src}")
    commands = "\n".join(cmds)
    return f"""{BROKER_TITLE}

Issue 9's performance figures, generated by `python -m bench report --section broker` from
`{src}` (started {doc["started"]}, Fanout commit `{mach.get("server_commit") or mach["commit"]}`,
{mach["cpu"]}, {mach["cores"]} cores). Median of {doc["repeats"]} runs per cell, servers
alternating; one-worker servers pinned to core 0, the clients to core 1.

- Fan-out: the raw rows are today's suite (64-byte binary payloads on `/ws/broadcast`); the
  fanout.v1 rows connect the same raw clients to `/ws` with `Sec-WebSocket-Protocol: fanout.v1`,
  send one `{{"id":1,"op":"sub","ch":"news"}}`, wait for its reply, then count frames from their
  headers as before. The publisher (subscribed, window of 32) sends
  `{{"op":"pub","ch":"news","data":D}}` with 64-byte JSON `D` =
  `{{"h":"<send time, publisher, sequence as 32 hex digits>","x":"<padding>"}}`; subscribers get
  `{{"ch":"news","d":D}}` (82 bytes).
- HTTP API: keep-alive HTTP/1.1 connections (32, one request in flight on each, split over 2
  client processes of raw asyncio clients that parse only the status line and
  `Content-Length`), the same request again as soon as its response is in. `POST /api/publish`
  sends `{{"channel":"news","data":D}}` with `X-API-Key`; two fanout.v1 subscribers on `news`
  count the publications that arrive. `GET /healthz` (a plain Starlette `JSONResponse` route
  on the same server) is the baseline: the difference is what the API itself costs.
  Server CPU us/request = the server's CPU time over the window / requests answered (and
  ns/delivery likewise): the cost of a request or a delivery, which other work on a shared
  machine moves less than it moves the rates.
{before}
{chr(10).join(lines)}

{broker_goals(doc)}

{busy_note}
{notes}
Commands:

```
{commands}
```
"""


def splice(md: str, title: str, section: str) -> str:
    """``md`` with the ``title`` section (up to the next ``## `` heading) replaced by
    ``section``, or with ``section`` put before ``## How this was measured`` (else at the end)."""
    start = md.find(title + "\n")
    if start >= 0:
        nxt = md.find("\n## ", start + len(title))
        end = len(md) if nxt < 0 else nxt + 1
        return md[:start] + section.rstrip("\n") + "\n\n" + md[end:].lstrip("\n")
    anchor = md.find("## How this was measured")
    if anchor >= 0:
        return md[:anchor] + section.rstrip("\n") + "\n\n" + md[anchor:]
    return md.rstrip("\n") + "\n\n" + section


def existing_section(md: str, title: str) -> str | None:
    start = md.find(title + "\n")
    if start < 0:
        return None
    nxt = md.find("\n## ", start + len(title))
    return md[start : len(md) if nxt < 0 else nxt + 1]


def load_broker(path: Path | None) -> tuple[dict[str, Any], Path]:
    """The given results file, or the newest compare-*.json with broker runs."""
    if path is not None:
        return json.loads(path.read_text()), path
    found = sorted(RESULTS.glob("compare-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for f in found:
        doc = json.loads(f.read_text())
        if any(is_broker_key(r["key"]) for r in doc["runs"]):
            return doc, f
    raise SystemExit(
        "no compare results with fanout-v1-*/api-* runs: run `python -m bench compare`"
    )


def main(args: argparse.Namespace) -> None:
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    target = docs / "benchmarks.md"
    old_md = target.read_text() if target.exists() else ""
    if getattr(args, "section", None) == "broker":
        bdoc, bpath = load_broker(Path(args.input) if args.input else None)
        md = splice(old_md or "# Benchmarks\n", BROKER_TITLE, broker_section(bdoc, bpath))
        target.write_text(md)
        print(json.dumps({"markdown": str(target), "section": BROKER_TITLE, "source": str(bpath)}))
        return
    doc, path = load(Path(args.input) if args.input else None)
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
    # The broker section: from this run when it has broker runs, else kept from the last report.
    if any(is_broker_key(k) for k in runs):
        md = splice(md, BROKER_TITLE, broker_section(doc, path))
    else:
        kept = existing_section(old_md, BROKER_TITLE)
        if kept is not None:
            md = splice(md, BROKER_TITLE, kept)
    target.write_text(md)
    print(json.dumps({"markdown": str(target), "plots": made, "source": str(path)}))
