"""WS /ws/echo: every message comes back to its sender unchanged."""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app.routes.session import run_session
from app.services.broadcast import BroadcastService
from app.services.connection import Connection
from app.services.message import Message


def _echo(service: BroadcastService, conn: Connection, message: Message) -> None:
    conn.offer(message)


def echo(websocket: WebSocket) -> Awaitable[None]:
    """Echo text as text and binary as binary, through the client's bounded outbox."""
    return run_session(websocket, endpoint="echo", channel=None, on_message=_echo)


routes: list[WebSocketRoute] = [WebSocketRoute("/ws/echo", echo)]
