"""The WebSocket session every socket route shares: admit, accept, receive, close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Receive
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.routes.context import broadcast_service, node_of, settings_of, stats_service
from app.server.socket import ServerSocket
from app.services.broadcast import BroadcastService, peer_of
from app.services.close_codes import CloseCode
from app.services.connection import Connection
from app.services.limits import RATE_LIMITED_REASON, address_of
from app.services.message import Message

OnMessage = Callable[[BroadcastService, Connection, Message], None]
"""What a socket route does with each message a client sends."""

YIELD_EVERY = 32
"""Messages handled before the receive loop lets the writers run.

uvicorn parses every frame of a socket read at once (up to 256 KiB with uvloop, thousands
of small messages) and ``receive`` then returns them without suspending; without a pause
the fan-out would fill every healthy client's outbox before any writer ran.
"""


async def deny(
    websocket: WebSocket,
    status: int,
    reason: str,
    detail: str,
    body: dict[str, Any] | None = None,
    note: str = "",
) -> None:
    """Refuse a handshake with an HTTP status, or a close code where the server can't.

    The body is ``{"error": reason, "detail": detail}`` (the raw sockets' shape) unless
    ``body`` is given (fanout.v1's ``{"error": {"code", "message"}}``); ``note`` goes to the
    log line only.
    """
    stats_service(websocket).rejected(reason, peer_of(websocket), websocket.url.path, note)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": "1"} if status == 503 else None
        content = body if body is not None else {"error": reason, "detail": detail}
        response = JSONResponse(content, status, headers=headers)
        await websocket.send_denial_response(response)
        ServerSocket(websocket.scope).denial_sent()
    else:
        await websocket.close(_DENIAL_CLOSE_CODES.get(status, CloseCode.POLICY_VIOLATION), detail)


_DENIAL_CLOSE_CODES = {
    503: CloseCode.TRY_AGAIN_LATER,
    403: CloseCode.FORBIDDEN,
    429: CloseCode.CONNECTION_LIMIT,
}
"""Where a server cannot answer a handshake with HTTP: the close code for each status."""


async def admit(websocket: WebSocket, *, endpoint: str, channel: str | None) -> Connection | None:
    """Register a client (its handshake not yet accepted) if its page's origin is allowed
    (else 403), the worker has room (else 503) and its address is under its quota (else
    429); a refused client gets None."""
    service = broadcast_service(websocket)
    origins = node_of(websocket).origins
    if origins.restricts and not origins.allows(origin := websocket.headers.get("origin")):
        note = f"Origin {origin[:200]!r} not allowed" if origin is not None else "no Origin header"
        await deny(websocket, 403, "origin", "origin not allowed", note=note)
        return None
    if not service.has_capacity():
        await deny(websocket, 503, "capacity", "server at its connection limit; retry later")
        return None
    # Last, with nothing awaited before connect() counts the address in.
    if not service.addresses.allows(address := address_of(peer_of(websocket))):
        limit = service.addresses.limit
        note = f"{address} already holds {limit}"
        await deny(websocket, 429, "per_ip", f"at most {limit} connections per address", note=note)
        return None
    return service.connect(websocket, endpoint=endpoint, channel=channel)


async def accept(websocket: WebSocket, conn: Connection, subprotocol: str | None = None) -> Receive:
    """Complete the handshake and start delivering; returns the receive to loop on."""
    await websocket.accept(subprotocol)
    conn.accepted(websocket.scope)
    # After accept, Starlette's receive only adds state checks the loop does not need.
    return ServerSocket.receive_of(websocket.scope, websocket.receive)


async def run_session(
    websocket: WebSocket, *, endpoint: str, channel: str | None, on_message: OnMessage
) -> None:
    """Serve one client until it leaves: every message it sends goes to ``on_message``."""
    conn = await admit(websocket, endpoint=endpoint, channel=channel)
    if conn is None:
        return
    service = broadcast_service(websocket)
    stats = service.stats  # shared: a bound method here would cost every idle socket
    limit = settings_of(websocket).max_message_bytes
    publish_limit = node_of(websocket).publish_limit
    bucket = publish_limit.bucket()  # None when there is no limit
    code: int = CloseCode.NO_STATUS
    unyielded = 0
    try:
        receive = await accept(websocket, conn)
        while True:
            event: Any = await receive()
            if event["type"] == "websocket.disconnect":
                code = event.get("code", CloseCode.NO_STATUS)
                break
            text = event.get("text")
            message = (
                Message.from_text(text) if text is not None else Message.from_bytes(event["bytes"])
            )
            if message.size > limit:
                code = CloseCode.MESSAGE_TOO_BIG
                conn.close(code, f"message of {message.size} bytes exceeds {limit}")
                break
            if bucket is None or bucket.take():
                stats.received()
                on_message(service, conn, message)
            elif bucket.exhausted:  # dropped, and the client keeps at it: closed
                code = CloseCode.RATE_LIMITED
                stats.rate_limited(conn, closing_over=publish_limit.describe())
                conn.close(code, RATE_LIMITED_REASON)
                break
            else:  # over the publish rate: dropped and counted
                stats.rate_limited(conn)
            unyielded += 1
            if unyielded == YIELD_EVERY:
                unyielded = 0
                await asyncio.sleep(0)
    except WebSocketDisconnect as exc:
        code = exc.code
    finally:
        await service.disconnect(conn, code)
