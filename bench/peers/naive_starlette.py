"""Naive Starlette broadcast baseline: ``for ws in clients: await ws.send(m)``.

Run: ``python -m uvicorn bench.peers.naive_starlette:app --port 8000``.
Same semantics as Fanout's ``/ws/broadcast[/{channel}]``: every message reaches
every client of the channel, the sender included, in order.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

channels: dict[str, set[WebSocket]] = {}


async def broadcast(ws: WebSocket) -> None:
    name = ws.path_params.get("channel", "")
    clients = channels.setdefault(name, set())
    await ws.accept()
    clients.add(ws)
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            text = msg.get("text")
            data = msg.get("bytes")
            for other in list(clients):
                try:
                    if text is not None:
                        await other.send_text(text)
                    elif data is not None:
                        await other.send_bytes(data)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    clients.discard(other)
    finally:
        clients.discard(ws)


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            if msg.get("text") is not None:
                await ws.send_text(msg["text"])
            elif msg.get("bytes") is not None:
                await ws.send_bytes(msg["bytes"])
    except WebSocketDisconnect:
        pass


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def stats(request: Request) -> JSONResponse:
    return JSONResponse({"connections": {"total": sum(len(c) for c in channels.values())}})


app = Starlette(
    routes=[
        WebSocketRoute("/ws/broadcast", broadcast),
        WebSocketRoute("/ws/broadcast/{channel}", broadcast),
        WebSocketRoute("/ws/echo", echo),
        Route("/healthz", healthz),
        Route("/stats", stats),
    ]
)
