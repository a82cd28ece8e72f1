"""Server CPU per WebSocket handshake, in-process, without the client's share or TCP's.

``python -m bench.handshake_cost --connections 5000`` starts Fanout (one uvicorn server,
uvloop, httptools, the default WebSocket protocol) in this process, opens the TCP
connections and writes every handshake request up front (they wait in the listen
backlog), then lets the server run and times its CPU until every socket has its 101:
accepting, uvloop's transport, uvicorn's HTTP protocol, Fanout's upgrade, admission and session,
the 101's write. The client's work is outside the clock, so two builds
compare without the noise of a load generator sharing the machine. ``--profile`` prints
cProfile's top functions for the timed part. The connect scenario of ``python -m bench``
remains the end-to-end figure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import socket
import sys
import time
from typing import Any

from bench.client import raise_fd_limit
from bench.protocol import handshake_request, make_key

HOST = "127.0.0.1"


BROWSER_OFFER = (
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"Origin: http://127.0.0.1:8000\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36\r\n"
)
"""What a browser adds to a handshake: the permessage-deflate offer Chrome and Firefox
send, an Origin and a User-Agent (``--browser``)."""


async def _round(
    server: Any,
    n: int,
    path: str,
    profile: cProfile.Profile | None,
    browser: bool = False,
    keep: list[socket.socket] | None = None,
) -> float:
    """Handshakes on ``n`` fresh sockets; returns server CPU microseconds per handshake.

    The clients connect (the kernel completes TCP's handshake into the listen backlog) and
    write their requests before the clock starts; the server then accepts and answers them.
    They are closed afterwards, or left open in ``keep``.
    """
    port = server.servers[0].sockets[0].getsockname()[1]
    clients = []
    for _ in range(n):
        client = socket.create_connection((HOST, port))
        request = handshake_request(HOST, port, path, make_key())
        if browser:
            request = request[:-2] + BROWSER_OFFER + b"\r\n"
        client.sendall(request)
        clients.append(client)
    broadcast = _app_state(server.config.loaded_app).node.broadcast
    base = broadcast.connection_count
    cpu = time.process_time()
    if profile is not None:
        profile.enable()
    # A session registers and writes its 101 in one step, so a count of n means n answers.
    while broadcast.connection_count < base + n:  # noqa: ASYNC110 (no event to wait on)
        await asyncio.sleep(0)
    if profile is not None:
        profile.disable()
    cpu = time.process_time() - cpu
    answered = 0
    for client in clients:
        client.settimeout(5)
        if client.recv(4096).startswith(b"HTTP/1.1 101 "):
            answered += 1
        if keep is None:
            client.close()
    if answered != n:
        raise RuntimeError(f"{n - answered} of {n} handshakes were not answered with 101")
    if keep is not None:
        keep.extend(clients)
        return cpu / n * 1e6
    while broadcast.connection_count > base:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return cpu / n * 1e6


def _app_state(app: Any) -> Any:
    """The Starlette app's ``state`` under uvicorn's middleware."""
    while not hasattr(app, "state"):
        app = app.app
    return app.state


async def measure(
    connections: int,
    rounds: int,
    path: str,
    profile: bool,
    browser: bool = False,
    hold: int = 0,
) -> None:
    """Start the server in this process and print the CPU per handshake of each round."""
    import uvicorn

    config = uvicorn.Config(
        "app.main:app", host=HOST, port=0, log_level="warning", access_log=False, backlog=4096
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
        await asyncio.sleep(0.05)
    await _round(server, min(500, connections), path, None, browser)  # warm-up
    held: list[socket.socket] = []
    while len(held) < hold:  # a warm server: sockets that stay open through the rounds
        await _round(server, min(2000, hold - len(held)), path, None, browser, keep=held)
    figures = []
    profiler = cProfile.Profile() if profile else None
    for _ in range(rounds):
        figures.append(await _round(server, connections, path, profiler, browser))
        print(f"  {connections} handshakes: {figures[-1]:.1f} us of server CPU each", flush=True)
    figures.sort()
    print(
        f"median {figures[len(figures) // 2]:.1f} us, best {figures[0]:.1f} us per handshake"
        f" ({path}; the best round is the least disturbed by the rest of the machine)"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    for client in held:
        client.close()
    server.should_exit = True
    await serving


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--connections N --rounds R --path P [--profile]``."""
    p = argparse.ArgumentParser(prog="python -m bench.handshake_cost", description=__doc__)
    p.add_argument("--connections", type=int, default=2000, help="per round (at most the backlog)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--path", default="/ws/broadcast")
    p.add_argument("--profile", action="store_true")
    p.add_argument(
        "--browser", action="store_true", help="handshakes as a browser sends them (deflate offer)"
    )
    p.add_argument(
        "--hold",
        type=int,
        default=0,
        help="sockets opened first and kept open through the rounds (a warm server)",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("FANOUT_STATS_LOG_INTERVAL", "0")
    os.environ.setdefault("FANOUT_LOG_LEVEL", "warning")
    os.environ.setdefault("FANOUT_MAX_CONNECTIONS", "100000")
    raise_fd_limit()
    import uvloop

    uvloop.run(
        measure(args.connections, args.rounds, args.path, args.profile, args.browser, args.hold)
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
