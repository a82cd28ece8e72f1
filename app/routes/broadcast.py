"""WS /ws/broadcast and /ws/broadcast/{channel}: every message to every subscriber."""

from __future__ import annotations

import re
from collections.abc import Awaitable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app.routes.session import deny, run_session
from app.services.broadcast import BroadcastService
from app.services.connection import Connection
from app.services.message import Message

DEFAULT_CHANNEL = "default"
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
BAD_CHANNEL = "channel names are 1-64 of [A-Za-z0-9_.-]"
CHANNEL_PATH = "/ws/broadcast/{channel}"


def _publish(service: BroadcastService, conn: Connection, message: Message) -> None:
    assert conn.channel is not None
    service.publish(conn.channel, message)


def broadcast_default(websocket: WebSocket) -> Awaitable[None]:
    """The default channel: what any client sends reaches every client, itself included."""
    # Returns the session rather than awaiting it: one coroutine frame less per idle socket.
    return run_session(
        websocket, endpoint="broadcast", channel=DEFAULT_CHANNEL, on_message=_publish
    )


async def broadcast_channel(websocket: WebSocket) -> None:
    """A named channel (1-64 characters of A-Z a-z 0-9 _ . -)."""
    channel = websocket.path_params["channel"]
    if not CHANNEL_NAME.fullmatch(channel):
        await deny(websocket, 400, "bad_channel", BAD_CHANNEL)
        return
    await run_session(websocket, endpoint="broadcast", channel=channel, on_message=_publish)


def refuse_bad_channel(request: Request) -> Response | None:
    """Plain HTTP on a channel path: 400 for a name the handshake would refuse too."""
    if CHANNEL_NAME.fullmatch(request.path_params.get("channel", "")):
        return None
    return JSONResponse({"error": "bad_channel", "detail": BAD_CHANNEL}, status_code=400)


routes: list[WebSocketRoute] = [
    WebSocketRoute("/ws/broadcast", broadcast_default),
    WebSocketRoute(CHANNEL_PATH, broadcast_channel),
]
http_checks = {CHANNEL_PATH: refuse_bad_channel}
"""Checks for plain HTTP requests to these socket paths (see routes.errors)."""
