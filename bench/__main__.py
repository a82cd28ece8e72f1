"""Fanout's benchmark suite.

Every scenario runs against a server on loopback only, is bounded in count and time,
prints ONE JSON line with its figures on stdout and a human summary on stderr.
By default it starts the server itself (`--server fanout`); with one worker it pins the
server to core 0 and the client processes to core 1 (`--no-pin` to disable).

Examples:
  python -m bench fanout --subscribers 1000 --duration 5
  python -m bench fanout --protocol v1 --subscribers 1000   # fanout.v1 clients on /ws
  python -m bench api --endpoint publish --connections 32   # POST /api/publish, keep-alive
  python -m bench api --endpoint healthz                    # the plain Starlette baseline
  python -m bench latency --subscribers 1000 --rates 20 200 2000
  python -m bench memory --steps 1000 5000 10000
  python -m bench connect --connections 5000
  python -m bench connect --server fanout-auth --token        # a distinct HS256 JWT per URL
  python -m bench connect --server fanout-auth --same-token   # one token: the verified cache
  python -m bench fanout --server fanout-hist --protocol v1 --channel hist.bench  # history
  python -m bench recovery --server fanout-hist --clients 1000 --behind 100
  python -m bench maxconn --target 40000 --server fanout-wN --workers 3
  python -m bench many --connections 100000 --workers 4 --nofile 65536   # ping, broadcast
  python -m bench churn --subscribers 1000 --churners 50
  python -m bench slow --subscribers 1000 --slow-share 0.1
  python -m bench fanout --port 8000            # an already running server (no RSS/CPU)
  python -m bench compare --quick               # side by side, writes bench/results/*.json
  python -m bench report                        # docs/benchmarks.md + docs/bench-*.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from bench import scenarios, servers
from bench.http_load import API_KEY
from bench.summary import summarize

SERVER_NAMES = [
    "fanout",
    "fanout-asgi",
    "fanout-wN",
    "fanout-auth",
    "fanout-hist",
    "fanout-hist-wN",
    "fanout-hist-redis-wN",
    "node-ws",
    "websockets",
    "naive-starlette",
]


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument(
        "--server",
        default="fanout",
        help=f"server to start: {', '.join(SERVER_NAMES)} (default: fanout)",
    )
    g.add_argument("--workers", type=int, default=2, help="workers for fanout-wN (default 2)")
    g.add_argument("--port", type=int, help="use a server already listening on 127.0.0.1:PORT")
    g.add_argument("--pid", type=int, help="with --port: server PID, to read its RSS and CPU")
    g.add_argument("--no-pin", action="store_true", help="do not pin server/clients to cores")
    g.add_argument("--procs", type=int, default=2, help="subscriber client processes (default 2)")
    g.add_argument("--path", help="WebSocket path (default /ws/broadcast; /ws with --protocol v1)")
    g.add_argument(
        "--protocol",
        choices=["raw", "v1"],
        default="raw",
        help="raw frames on --path, or fanout.v1 clients (subprotocol, one sub, JSON pub)",
    )
    g.add_argument("--channel", default="news", help="fanout.v1 channel (default news)")
    g.add_argument(
        "--api-key",
        default=API_KEY,
        help=f"HTTP API key (default {API_KEY}, which started servers are given)",
    )
    g.add_argument(
        "--save",
        action="store_true",
        help="also keep the result as bench/results/extra-<scenario>-<server>.json for the report",
    )


@contextlib.contextmanager
def target_from(args: argparse.Namespace) -> Iterator[scenarios.Target]:
    if args.port:
        pid = args.pid
        yield scenarios.Target(
            port=args.port,
            name=f"port-{args.port}",
            rss_kb=(lambda: servers.rss_kb(pid)) if pid else None,
            cpu_seconds=(lambda: servers.cpu_seconds(pid)) if pid else None,
            protocol=args.protocol,
            channel=args.channel,
            api_key=args.api_key,
        )
        return
    specs = servers.server_specs(args.workers)
    name = args.server.replace("-wN", f"-w{args.workers}")
    if name not in specs:
        raise SystemExit(f"unknown server {args.server!r}; choose from {', '.join(specs)}")
    spec = specs[name]
    pin = not args.no_pin and spec.workers == 1 and (os.cpu_count() or 1) >= 2
    with servers.running(spec, cpus=[0] if pin else None) as srv:
        yield scenarios.Target(
            port=srv.port,
            name=name,
            rss_kb=srv.rss_kb,
            cpu_seconds=srv.cpu_seconds,
            client_cpus=[1] if pin else None,
            protocol=args.protocol,
            channel=args.channel,
            api_key=args.api_key,
        )


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, separators=(",", ":")), flush=True)
    print(summarize(result), file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="SCENARIO")

    p = sub.add_parser("fanout", help="deliveries/s: N subscribers, P publishers")
    _common(p)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--publishers", type=int, default=1)
    p.add_argument("--size", type=int, default=64, help="payload bytes (min 16)")
    p.add_argument("--window", type=int, default=32, help="messages in flight per publisher")
    p.add_argument("--rate", type=float, default=0.0, help="fixed total msg/s (0: window mode)")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)

    p = sub.add_parser("latency", help="publish-to-receive p50/p99/max at fixed rates")
    _common(p)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rates", type=float, nargs="+", default=[20.0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)

    p = sub.add_parser("memory", help="server RSS per idle connection")
    _common(p)
    p.add_argument("--steps", type=int, nargs="+", default=[1000, 5000, 10000])
    p.add_argument("--settle", type=float, default=2.0)

    p = sub.add_parser("connect", help="connection rate (handshakes/s)")
    _common(p)
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=200, help="in flight per client process")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument(
        "--token",
        action="store_true",
        help="?token=<HS256 JWT> on every URL, a distinct one per connection (signed up front;"
        " server: fanout-auth)",
    )
    tok.add_argument(
        "--same-token",
        action="store_true",
        help="like --token, one token for every connection (the verified-token cache)",
    )
    p.add_argument("--secret", default=servers.TOKEN_SECRET, help="HS256 secret of the tokens")

    p = sub.add_parser(
        "recovery", help="N clients reconnect with since, M behind, on a history channel"
    )
    _common(p)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--behind", type=int, default=100, help="messages published while away")

    p = sub.add_parser("maxconn", help="ramp idle connections up to a target")
    _common(p)
    p.add_argument("--target", type=int, default=40000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--time-limit", type=float, default=240.0)

    p = sub.add_parser("churn", help="connect/disconnect while broadcasting")
    _common(p)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--churners", type=int, default=50, help="parallel connect/close loops")
    p.add_argument("--hold", type=float, default=0.2, help="seconds a churner stays connected")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=5.0)

    p = sub.add_parser("slow", help="a share of clients stops reading")
    _common(p)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--slow-share", type=float, default=0.1)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--duration", type=float, default=5.0)

    p = sub.add_parser("api", help="HTTP API requests/s, keep-alive (vs a plain JSON route)")
    _common(p)
    p.add_argument(
        "--endpoint",
        choices=list(scenarios.API_ENDPOINTS),
        default="publish",
        help="publish: POST /api/publish; healthz: GET /healthz, the plain Starlette baseline",
    )
    p.add_argument(
        "--connections", type=int, default=32, help="keep-alive connections, 1 in flight each"
    )
    p.add_argument(
        "--subscribers", type=int, default=2, help="fanout.v1 clients counting the publishes"
    )
    p.add_argument("--size", type=int, default=64, help="JSON data bytes (min 47)")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--max-requests", type=int, default=2_000_000, help="bound on requests sent")

    p = sub.add_parser("compare", help="side by side: Fanout vs reference servers")
    p.add_argument("--servers", nargs="+", help="default: fanout fanout-wN node-ws websockets")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="shorter runs (about 10 minutes)")
    p.add_argument(
        "--only",
        nargs="+",
        help="plan keys to run (fanout-1000 fanout-v1-1000 api-publish api-healthz latency ...)",
    )
    p.add_argument("--subscribers", type=int, nargs="+", help="fan-out sizes (100 1000 5000 10000)")
    p.add_argument("--out", help="JSON results file (default bench/results/compare-<time>.json)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=20.0,
        help="before each run, wait up to this many seconds for an idle machine (0: never)",
    )

    from bench import many

    many.add_parser(sub)

    p = sub.add_parser("report", help="write docs/benchmarks.md and docs/bench-*.png")
    p.add_argument("--input", help="compare results JSON (default: the newest)")
    p.add_argument("--docs", default=str(servers.REPO / "docs"))
    p.add_argument(
        "--section",
        choices=["broker"],
        help="only rewrite this section of docs/benchmarks.md (broker: fanout.v1 and the HTTP"
        " API, from --input or the newest compare results with fanout-v1-*/api-* runs)",
    )
    return ap


def _terminate(signum: int, frame: object) -> None:
    # Turn SIGTERM (e.g. from `timeout`) into SystemExit so servers and clients we
    # started are stopped by their context managers instead of being orphaned.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    if args.cmd == "compare":
        from bench import runner

        runner.main(args)
        return 0
    if args.cmd == "many":
        from bench import many

        many.main(args)
        return 0
    if args.cmd == "report":
        from bench import report

        report.main(args)
        return 0
    with target_from(args) as t:
        procs = args.procs
        path = args.path or ("/ws" if args.protocol == "v1" else "/ws/broadcast")
        if args.cmd == "fanout":
            r = scenarios.fanout(
                t,
                args.subscribers,
                args.publishers,
                args.size,
                args.window,
                args.rate,
                args.duration,
                args.warmup,
                procs,
                path,
            )
        elif args.cmd == "latency":
            r = scenarios.latency(
                t, args.subscribers, args.rates, args.size, args.duration, args.warmup, procs, path
            )
        elif args.cmd == "memory":
            r = scenarios.memory(t, args.steps, args.settle, procs, path)
        elif args.cmd == "connect":
            token = "distinct" if args.token else "same" if args.same_token else "none"
            r = scenarios.connect_rate(
                t, args.connections, args.concurrency, procs, path, token, args.secret
            )
        elif args.cmd == "recovery":
            channel = args.channel if args.channel != "news" else servers.HIST_CHANNEL
            path = args.path or "/ws"
            r = scenarios.recovery(t, args.clients, args.behind, channel, procs, path)
        elif args.cmd == "maxconn":
            r = scenarios.max_connections(t, args.target, args.batch, args.time_limit, path=path)
        elif args.cmd == "churn":
            r = scenarios.churn(
                t,
                args.subscribers,
                args.churners,
                args.hold,
                args.rate,
                duration=args.duration,
                procs=procs,
                path=path,
            )
        elif args.cmd == "slow":
            r = scenarios.slow_consumer(
                t,
                args.subscribers,
                args.slow_share,
                args.rate,
                args.size,
                args.duration,
                procs,
                path,
            )
        elif args.cmd == "api":
            r = scenarios.api(
                t,
                args.endpoint,
                args.connections,
                args.subscribers,
                args.size,
                args.duration,
                args.warmup,
                args.max_requests,
                procs,
            )
        else:  # pragma: no cover - argparse rejects it
            raise SystemExit(f"unknown scenario {args.cmd}")
    emit(r)
    if args.save:
        r["command"] = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
        if "BENCH_FANOUT_DIR" in os.environ and not args.port:
            env = f"BENCH_FANOUT_DIR={os.environ['BENCH_FANOUT_DIR']} "
            r["command"] = env + r["command"]
            r["server_commit"] = os.environ.get("BENCH_FANOUT_COMMIT", "")
        servers.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        kind = r["scenario"]
        if r.get("params", {}).get("protocol") == "fanout.v1":
            kind += "-v1"
        if r.get("params", {}).get("token", "none") != "none":
            kind += "-token-" + r["params"]["token"]
        if kind == "api":
            kind += "-" + r["params"]["endpoint"]
        out = servers.RESULTS_DIR / f"extra-{kind}-{r['server']}.json"
        out.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
