"""Reference peer: the ``websockets`` library (asyncio API) with its ``broadcast()``.

Run: ``python -m bench.peers.websockets_server --port 8000``.
Clients of ``/ws/broadcast`` (or ``/ws/broadcast/<channel>``) receive every message
sent by any client of the same path, the sender included, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

channels: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else "/"
    if path == "/ws/echo":
        async for message in ws:
            await ws.send(message)
        return
    clients = channels.setdefault(path, set())
    clients.add(ws)
    try:
        async for message in ws:
            broadcast(clients, message)
    finally:
        clients.discard(ws)


def process_request(conn: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return conn.respond(HTTPStatus.OK, "ok\n")
    if not request.path.startswith("/ws/"):
        return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None


async def main(host: str, port: int) -> None:
    async with serve(
        handler,
        host,
        port,
        process_request=process_request,
        compression=None,
        max_queue=None,
        ping_interval=None,
        backlog=4096,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.host, args.port))
    else:
        uvloop.run(main(args.host, args.port))
