"""WS /ws/broadcast and /ws/broadcast/{channel}: every message to every subscriber."""

from __future__ import annotations

import re

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from app.routes.context import broadcast_service
from app.routes.session import deny, run_session
from app.services.connection import Connection
from app.services.message import Message

DEFAULT_CHANNEL = "default"
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


async def _serve(websocket: WebSocket, channel: str) -> None:
    service = broadcast_service(websocket)

    def publish(conn: Connection, message: Message) -> None:
        service.publish(channel, message)

    await run_session(websocket, endpoint="broadcast", channel=channel, on_message=publish)


async def broadcast_default(websocket: WebSocket) -> None:
    """The default channel: what any client sends reaches every client, itself included."""
    await _serve(websocket, DEFAULT_CHANNEL)


async def broadcast_channel(websocket: WebSocket) -> None:
    """A named channel (1-64 characters of A-Z a-z 0-9 _ . -)."""
    channel = websocket.path_params["channel"]
    if not CHANNEL_NAME.fullmatch(channel):
        await deny(websocket, 400, "bad_channel", "channel names are 1-64 of [A-Za-z0-9_.-]")
        return
    await _serve(websocket, channel)


routes: list[BaseRoute] = [
    WebSocketRoute("/ws/broadcast", broadcast_default),
    WebSocketRoute("/ws/broadcast/{channel}", broadcast_channel),
]
