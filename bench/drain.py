"""The drain's spread: when the clients of a SIGTERM-ed Fanout get their 1012, and the hints.

``python -m bench.drain --clients 5000 --seconds 10`` starts one Fanout worker on a free
loopback port, opens the clients (raw sockets, one process), sends SIGTERM and prints a
histogram of close arrival times (0.5 s bins from the signal) and of the reconnect hints,
then one JSON line. Bounded: the clients, the window and a 60 s cap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from bench.client import raise_fd_limit
from bench.protocol import handshake_request, make_key

BIN = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake_request("127.0.0.1", port, "/ws/broadcast", make_key()))
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    return reader, writer


async def _close_of(reader: asyncio.StreamReader) -> tuple[float, int, int | None]:
    """(arrival, close code, reconnect_after_ms) of the server's close frame."""
    while True:
        b1, b2 = await reader.readexactly(2)
        n = b2 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(n)
        if b1 & 0x0F == 0x8:
            at = time.monotonic()
            code = int.from_bytes(payload[:2], "big")
            try:
                hint = json.loads(payload[2:])["reconnect_after_ms"]
            except (ValueError, KeyError, TypeError):
                hint = None
            return at, code, hint


def _histogram(values: list[float], width: float) -> dict[float, int]:
    counts = Counter(int(v // width) for v in values)
    return {round(k * width, 3): counts[k] for k in range(min(counts), max(counts) + 1)}


def start_server(seconds: float) -> tuple[subprocess.Popen[bytes], int]:
    """One Fanout worker on a free loopback port, draining over ``seconds``."""
    port = _free_port()
    env = {**os.environ, "FANOUT_DRAIN_SECONDS": str(seconds), "FANOUT_STATS_LOG_INTERVAL": "0"}
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    cmd += ["--log-level", "warning"]
    return subprocess.Popen(cmd, env=env), port


async def run(server: subprocess.Popen[bytes], port: int, clients: int) -> dict[str, Any]:
    """Open ``clients`` sockets, SIGTERM ``server``, and time the closes."""
    try:
        for _ in range(200):
            try:
                await asyncio.wait_for(_open(port), 1)
                break
            except (OSError, RuntimeError, TimeoutError):
                await asyncio.sleep(0.1)
        streams = []
        for start in range(0, clients, 100):
            batch = min(100, clients - start)
            streams += await asyncio.gather(*(_open(port) for _ in range(batch)))
        waits = [asyncio.create_task(_close_of(reader)) for reader, _ in streams]
        await asyncio.sleep(1.0)
        began = time.monotonic()
        server.send_signal(signal.SIGTERM)
        closes = await asyncio.wait_for(asyncio.gather(*waits), 60)
        status = await asyncio.to_thread(server.wait, 60)
        for _, writer in streams:
            writer.close()
    finally:
        if server.poll() is None:
            server.kill()
    times = sorted(at - began for at, _, _ in closes)
    hints = sorted(h for _, _, h in closes if h is not None)
    busiest = max(sum(1 for t in times if s <= t < s + BIN) for s in times)
    return {
        "scenario": "drain",
        "clients": clients,
        "codes": dict(Counter(code for _, code, _ in closes)),
        "first_close_s": round(times[0], 3),
        "last_close_s": round(times[-1], 3),
        "busiest_half_second": busiest,
        "close_histogram": _histogram(times, BIN),
        "hint_ms_min": hints[0] if hints else None,
        "hint_ms_max": hints[-1] if hints else None,
        "hint_histogram_s": _histogram([h / 1000 for h in hints], 1.0),
        "exit_status": status,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    raise_fd_limit()
    server, port = start_server(args.seconds)
    result = {**asyncio.run(run(server, port, args.clients)), "drain_seconds": args.seconds}
    for name in ("close_histogram", "hint_histogram_s"):
        print(f"{name}:", file=sys.stderr)
        hist: dict[float, int] = result[name]
        for start, count in hist.items():
            print(
                f"  {start:6.1f} s {count:6d} {'#' * (count * 60 // max(hist.values()))}",
                file=sys.stderr,
            )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
