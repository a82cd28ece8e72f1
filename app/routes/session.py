"""The WebSocket session every socket route shares: admit, accept, receive, close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Receive
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.routes.context import node_of, settings_of, stats_service
from app.server.socket import ServerSocket
from app.services.broadcast import BroadcastService, peer_of
from app.services.close_codes import CloseCode
from app.services.connection import Connection
from app.services.drain import close_reason
from app.services.history.publisher import OrderedPublisher
from app.services.limits import RATE_LIMITED_REASON, address_of
from app.services.message import Message
from app.services.tokens import LEEWAY, Identity, TokenError

OnMessage = Callable[[BroadcastService, Connection, Message], None]
"""What a socket route does with each message a client sends."""

DRAINING = "draining"
"""The refusal reason (and /stats ``rejected`` key) of a handshake during a drain."""

V1_ENDPOINT = "ws"
"""The endpoint name of ``WS /ws`` (fanout.v1), whose refusals use its error shape."""

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
    retry_after: int = 1,
    note: str = "",
) -> None:
    """Refuse a handshake with an HTTP status, or a close code where the server can't.

    The body is ``{"error": reason, "detail": detail}`` (the raw sockets' shape) unless
    ``body`` is given (fanout.v1's ``{"error": {"code", "message"}}``). A 503 carries
    ``Retry-After: retry_after``; ``note`` goes to the log line only.
    """
    stats_service(websocket).rejected(reason, peer_of(websocket), websocket.url.path, note)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": str(retry_after)} if status == 503 else None
        content = body if body is not None else {"error": reason, "detail": detail}
        response = JSONResponse(content, status, headers=headers)
        await websocket.send_denial_response(response)
        ServerSocket(websocket.scope).denial_sent()
    elif reason == DRAINING:
        hint = close_reason(retry_after)
        await websocket.close(CloseCode.SERVICE_RESTART, hint)
    else:
        await websocket.close(_DENIAL_CLOSE_CODES.get(status, CloseCode.POLICY_VIOLATION), detail)


_DENIAL_CLOSE_CODES = {
    503: CloseCode.TRY_AGAIN_LATER,
    403: CloseCode.FORBIDDEN,
    429: CloseCode.CONNECTION_LIMIT,
}
"""Where a server cannot answer a handshake with HTTP: the close code for each status."""


async def admit(
    websocket: WebSocket, *, endpoint: str, channel: str | None
) -> tuple[Connection, Identity | None] | None:
    """Register a client (its handshake not yet accepted) and say who it is, or refuse it
    with an HTTP status and return None.

    Refusals: 403 for a page's origin not allowed; 503 while the worker drains, and at its
    connection limit; 401 for an invalid ``?token=`` (or none, on a raw socket where
    FANOUT_REQUIRE_AUTH is on: ``/ws`` may still ``connect``); 401/403 where the channel's
    rules do not let this client subscribe; 429 for an address over its quota.
    """
    node = node_of(websocket)
    v1 = endpoint == V1_ENDPOINT
    origins = node.origins
    if origins.restricts and not origins.allows(origin := websocket.headers.get("origin")):
        note = f"Origin {origin[:200]!r} not allowed" if origin is not None else "no Origin header"
        await refuse(websocket, 403, "origin", "origin not allowed", v1, note=note)
        return None
    if node.drain.draining:
        await refuse(
            websocket, 503, DRAINING, "server draining; reconnect", v1, node.drain.retry_after()
        )
        return None
    if not node.broadcast.has_capacity():
        await refuse(websocket, 503, "capacity", "server at its connection limit; retry later", v1)
        return None
    identity: Identity | None = None
    token = websocket.query_params.get("token")
    if token:
        try:
            identity = node.auth.tokens.connection(token)
        except TokenError as exc:
            await refuse(websocket, 401, "token", exc.reason, v1)
            return None
    elif not v1 and settings_of(websocket).require_auth:
        await refuse(websocket, 401, "auth_required", "a token is required: ?token=", v1)
        return None
    if channel is not None:
        refusal = node.auth.may_subscribe(identity, channel)
        if refusal is not None:
            reason = "forbidden" if refusal.code == 403 else "auth_required"
            await refuse(websocket, refusal.code, reason, refusal.message, v1)
            return None
    # Last, with nothing awaited before connect() counts the address in.
    addresses = node.broadcast.addresses
    if not addresses.allows(address := address_of(peer_of(websocket))):
        note = f"{address} already holds {addresses.limit}"
        detail = f"at most {addresses.limit} connections per address"
        await refuse(websocket, 429, "per_ip", detail, v1, note=note)
        return None
    return node.broadcast.connect(websocket, endpoint=endpoint, channel=channel), identity


async def refuse(
    websocket: WebSocket,
    status: int,
    reason: str,
    detail: str,
    v1: bool,
    retry_after: int = 1,
    note: str = "",
) -> None:
    """:func:`deny` with the body shape of the socket's kind (fanout.v1's on ``/ws``)."""
    body = {"error": {"code": status, "message": detail}} if v1 else None
    await deny(websocket, status, reason, detail, body, retry_after, note)


def expire_at_exp(conn: Connection, identity: Identity | None) -> asyncio.TimerHandle | None:
    """Close ``conn`` with 4001 when ``identity``'s token expires (plus the leeway)."""
    if identity is None or identity.exp is None:
        return None
    delay = max(0.0, identity.exp + LEEWAY - time.time())  # exp is wall-clock
    return asyncio.get_running_loop().call_later(
        delay, conn.close, CloseCode.TOKEN_EXPIRED, "token expired"
    )


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
    admitted = await admit(websocket, endpoint=endpoint, channel=channel)
    if admitted is None:
        return
    conn, identity = admitted
    node = node_of(websocket)
    service = node.broadcast
    stats = service.stats  # shared: a bound method here would cost every idle socket
    limit = settings_of(websocket).max_message_bytes
    publish_limit = node.publish_limit
    bucket = publish_limit.bucket()  # None when there is no limit
    # Rules never change at run time: decided once, acted on at the first message.
    forbidden = (
        node.auth.may_publish(identity, channel, subscribed=True) if channel is not None else None
    )
    expiry = expire_at_exp(conn, identity)
    # A history channel's publications are numbered by the store, in the order sent.
    retention = node.history.retention(channel) if channel is not None else None
    kept = OrderedPublisher(node.history) if retention is not None else None
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
            if forbidden is not None:
                code = CloseCode.FORBIDDEN
                conn.close(code, forbidden.message)
                break
            if bucket is None or bucket.take():
                stats.received()
                if kept is None:
                    on_message(service, conn, message)
                elif not kept.offer(channel, message, retention):  # type: ignore[arg-type]
                    code = CloseCode.SLOW_CONSUMER  # publishing faster than history keeps
                    conn.close(code, "publishing faster than the history store")
                    break
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
        if expiry is not None:
            expiry.cancel()
        if kept is not None:
            await kept.aclose()
        await service.disconnect(conn, code)
