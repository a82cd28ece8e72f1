"""WS /ws/broadcast and /ws/broadcast/{channel}: every message to every subscriber."""

from __future__ import annotations

import re
from collections.abc import Awaitable

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from app.routes.session import deny, run_session
from app.services.broadcast import BroadcastService
from app.services.connection import Connection
from app.services.message import Message

DEFAULT_CHANNEL = "default"
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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
        await deny(websocket, 400, "bad_channel", "channel names are 1-64 of [A-Za-z0-9_.-]")
        return
    await run_session(websocket, endpoint="broadcast", channel=channel, on_message=_publish)


routes: list[BaseRoute] = [
    WebSocketRoute("/ws/broadcast", broadcast_default),
    WebSocketRoute("/ws/broadcast/{channel}", broadcast_channel),
]
