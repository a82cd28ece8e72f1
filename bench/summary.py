"""One-line human summaries of scenario results."""

from __future__ import annotations

from typing import Any


def _num(x: Any, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float | int) and abs(x) >= 10_000:
        return f"{x:,.0f}{unit}"
    if isinstance(x, float):
        return f"{x:.3g}{unit}"
    return f"{x}{unit}"


def _lat(lat: dict[str, Any] | None) -> str:
    if not lat or not lat.get("count"):
        return "latency: no samples"
    return (
        f"p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms, max {lat['max_ms']:.3f} ms"
        f" ({lat['count']:,} samples)"
    )


def summarize(r: dict[str, Any]) -> str:
    s = r.get("scenario")
    name = r.get("server", "?")
    p = r.get("params", {})
    if p.get("protocol") == "fanout.v1":
        name += " (fanout.v1)"
    if s == "fanout":
        return (
            f"[fanout] {name}: {_num(r['deliveries_per_s'])} deliveries/s to "
            f"{p['subscribers']} subscribers ({_num(r['publish_rate'])} msg/s published, "
            f"delivery ratio {_num(r['delivery_ratio'])}, "
            f"{r['subscribers_without_frames']} subscribers without frames, "
            f"server CPU {_num(r.get('server_cpu_util'))}, client CPU {_num(r['client_cpu_util'])})"
        )
    if s == "latency":
        parts = [
            f"{ph['rate']:g}/s: {_lat(ph['latency'])}"
            + (
                f", first 10 % p50 {first['p50_ms']:.3f} ms p99 {first['p99_ms']:.3f} ms"
                if (first := ph.get("latency_first10")) and first.get("count")
                else ""
            )
            for ph in r["phases"]
        ]
        return f"[latency] {name}, {p['subscribers']} subscribers: " + "; ".join(parts)
    if s == "memory":
        pts = ", ".join(
            f"{pt['connections']}: {pt['rss_kb'] / 1024:.1f} MiB ({pt['kb_per_conn']} KB/conn, "
            f"{pt['alive']} alive)"
            for pt in r["points"]
        )
        return f"[memory] {name}: baseline {r['baseline_rss_kb'] / 1024:.1f} MiB; {pts}"
    if s == "recovery":
        return (
            f"[recovery] {name}: {r['reconnected']}/{p['clients']} clients back with since,"
            f" {p['behind']} behind: all replies in {_num(r['recovery_s'])} s;"
            f" {r['complete']} complete and in order; problems {r['problems']},"
            f" errors {r['errors']}, server CPU {_num(r.get('server_cpu_s'))} s"
        )
    if s == "connect":
        if p.get("token", "none") != "none":
            name += f" (token: {p['token']})"
        return (
            f"[connect] {name}: {r['connected']}/{p['connections']} in {r['elapsed_s']} s = "
            f"{_num(r['connects_per_s'])} connects/s, handshake p50 "
            f"{_num(r['handshake_p50_ms'])} ms; errors {r['errors']}"
        )
    if s == "maxconn":
        return (
            f"[maxconn] {name}: opened {r['opened']}, open at end {r['open_at_end']}, "
            f"alive (answered a ping) {r['alive']}, received a broadcast "
            f"{r.get('received_broadcast')}; server RSS {_num(r['server_rss_kb'])} KB"
        )
    if s == "churn":
        return (
            f"[churn] {name}: {_num(r['churn_connects_per_s'])} connects/s churned, "
            f"{r['churn'].get('connect_errors', 0)} connect errors; stable subscribers: "
            f"delivery ratio {_num(r['delivery_ratio'])}, {r['lost_connections']} lost; "
            + _lat(r["latency"])
        )
    if s == "slow":
        b, a = r["before"], r["after"]
        return (
            f"[slow] {name}: fast clients {_num(b['deliveries_per_s'])} -> "
            f"{_num(a['deliveries_per_s'])} deliveries/s (x{_num(r['fast_throughput_ratio'])}), "
            f"p99 {_num((b['latency'] or {}).get('p99_ms'))} -> "
            f"{_num((a['latency'] or {}).get('p99_ms'))} ms; {r['slow_still_open']}/"
            f"{r['slow_connected']} stalled clients still open; server RSS growth "
            f"{_num(r['server_rss_growth_kb'])} KB"
        )
    if s == "api":
        cpu = r.get("server_cpu_us_per_request")
        delivered = r.get("delivered_per_subscriber") or []
        seen = (
            f"; subscribers got {delivered} of {r['ok_total']:,} publishes"
            if p["endpoint"] == "publish"
            else ""
        )
        return (
            f"[api] {name}: {p['method']} {r['requests_per_s']:,.0f} requests/s "
            f"({r['ok_per_s']:,.0f} 2xx) over {r['connections_open']} keep-alive connections; "
            f"{_lat(r['latency'])}; server CPU {_num(r.get('server_cpu_util'))} "
            f"({_num(cpu)} us/request), client CPU {_num(r['client_cpu_util'])}; "
            f"statuses {r['statuses']}{seen}"
        )
    return str(r)
