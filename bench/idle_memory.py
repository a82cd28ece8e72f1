"""Bytes per idle connection, by owner: tracemalloc around a uvicorn server in this process.

``python -m bench.idle_memory --connections 2000`` starts Fanout (one uvicorn server, uvloop,
httptools, the default WebSocket protocol) in this process with tracemalloc on, opens the
idle sockets from a client process (raw handshakes on ``/ws/broadcast``, nothing sent after),
and prints what the server's Python heap grew by per connection, grouped by the package of
the allocating line (``--by line``: the lines themselves). The kernel's socket buffers are
not in it, nor is anything allocated outside Python's allocators; the RSS figure of
``python -m bench memory`` includes both.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import socket
import sys
import tracemalloc
from collections import defaultdict
from multiprocessing.connection import Connection as Pipe

from bench.client import raise_fd_limit
from bench.protocol import handshake_request, make_key

HOST = "127.0.0.1"
OWNERS = (
    ("/uvicorn/", "uvicorn"),
    ("/websockets/", "websockets"),
    ("/starlette/", "starlette"),
    ("/app/", "fanout (app/)"),
    ("/asyncio/", "asyncio"),
    ("/uvloop/", "uvloop"),
)


def owner_of(filename: str) -> str:
    """The package an allocating source file belongs to (``other`` if none of ours)."""
    for marker, name in OWNERS:
        if marker in filename:
            return name
    return "other (stdlib)"


async def _hold(port: int, n: int, path: str, pipe: Pipe) -> None:
    socks: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(100)

    async def one() -> None:
        async with sem:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(handshake_request(HOST, port, path, make_key()))
            await reader.readuntil(b"\r\n\r\n")
            socks.append(writer)

    await asyncio.gather(*(one() for _ in range(n)))
    pipe.send(len(socks))
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    for writer in socks:
        writer.close()


def _client(port: int, n: int, path: str, pipe: Pipe) -> None:
    raise_fd_limit()
    asyncio.run(_hold(port, n, path, pipe))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def measure(connections: int, path: str, by: str, top: int) -> None:
    """Start the server, open ``connections`` idle sockets, print the heap growth per socket."""
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(
        "app.main:app", host=HOST, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
        await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    mine, theirs = multiprocessing.Pipe()
    # A warm-up round first, so one-off caches (imports, interned strings) are not counted.
    for rounds, n in ((0, min(200, connections)), (1, connections)):
        proc = multiprocessing.Process(target=_client, args=(port, n, path, theirs))
        if rounds:
            gc.collect()
            tracked = len(gc.get_objects())
            before = tracemalloc.take_snapshot()
        proc.start()
        opened = await loop.run_in_executor(None, mine.recv)
        await asyncio.sleep(1.0)
        if rounds:
            gc.collect()
            tracked = len(gc.get_objects()) - tracked
            after = tracemalloc.take_snapshot()
        mine.send("close")
        await loop.run_in_executor(None, proc.join)
        await asyncio.sleep(1.0)
    stats = after.compare_to(before, "lineno" if by == "line" else "filename")
    groups: dict[str, int] = defaultdict(int)
    for stat in stats:
        frame = stat.traceback[0]
        key = owner_of(frame.filename) if by == "owner" else f"{frame.filename}:{frame.lineno}"
        groups[key] += stat.size_diff
    total = sum(groups.values())
    print(
        f"{opened} idle connections, {total / opened:,.0f} bytes per connection (Python heap),"
        f" {tracked / opened:.1f} objects per connection tracked by the garbage collector"
    )
    for key, size in sorted(groups.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{size / opened:10,.0f}  {key}")
    server.should_exit = True
    await serving


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--connections N --path P --by owner|line --top K``."""
    p = argparse.ArgumentParser(prog="python -m bench.idle_memory", description=__doc__)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--path", default="/ws/broadcast")
    p.add_argument("--by", choices=("owner", "line"), default="owner")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    os.environ.setdefault("FANOUT_STATS_LOG_INTERVAL", "0")
    os.environ.setdefault("FANOUT_LOG_LEVEL", "warning")
    os.environ.setdefault("FANOUT_MAX_CONNECTIONS", "100000")
    raise_fd_limit()
    tracemalloc.start(1)
    import uvloop

    uvloop.run(measure(args.connections, args.path, args.by, args.top))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
