"""The WebSocket session every socket route shares: admit, accept, receive, close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from app.routes.context import node_of, stats_service
from app.routes.events import EventSession, serve
from app.server.socket import ServerSocket
from app.services.broadcast import BroadcastService, peer_of
from app.services.close_codes import CloseCode
from app.services.connection import Connection
from app.services.drain import close_reason
from app.services.history.publisher import OrderedPublisher
from app.services.limits import RATE_LIMITED_REASON, address_of
from app.services.message import Message
from app.services.node import Node
from app.services.tokens import LEEWAY, Identity, TokenError

OnMessage = Callable[[BroadcastService, Connection, Message], None]
"""What a socket route does with each message a client sends."""

DRAINING = "draining"
"""The refusal reason (and /stats ``rejected`` key) of a handshake during a drain."""

V1_ENDPOINT = "ws"
"""The endpoint name of ``WS /ws`` (fanout.v1), whose refusals use its error shape."""


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
    websocket: WebSocket, *, endpoint: str, channel: str | None, node: Node
) -> tuple[Connection, Identity | None] | None:
    """Register a client (its handshake not yet accepted) and say who it is, or refuse it
    with an HTTP status and return None.

    Refusals: 403 for a page's origin not allowed; 503 while the worker drains, and at its
    connection limit; 401 for an invalid ``?token=`` (or none, on a raw socket where
    FANOUT_REQUIRE_AUTH is on: ``/ws`` may still ``connect``); 401/403 where the channel's
    rules do not let this client subscribe; 429 for an address over its quota.
    ``node`` is the worker's, which the caller has already.
    """
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
    # Parsed only where it may be (a percent-encoded name too): most have no query at all.
    query: bytes = websocket.scope.get("query_string", b"")
    token = websocket.query_params.get("token") if b"token" in query or b"%" in query else None
    if token:
        try:
            identity = node.auth.tokens.connection(token)
        except TokenError as exc:
            await refuse(websocket, 401, "token", exc.reason, v1)
            return None
    elif not v1 and node.broadcast.settings.require_auth:
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
    peer = peer_of(websocket)
    if not addresses.allows(address := address_of(peer)):
        note = f"{address} already holds {addresses.limit}"
        detail = f"at most {addresses.limit} connections per address"
        await refuse(websocket, 429, "per_ip", detail, v1, note=note)
        return None
    conn = node.broadcast.connect(websocket, endpoint=endpoint, channel=channel, peer=peer)
    return conn, identity


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


class RawSession(EventSession):
    """A raw socket's session: each message the client sends goes to ``on_message``,
    within the size limit, the channel's rules and the publish rate."""

    __slots__ = (
        "_bucket",
        "_expiry",
        "_forbidden",
        "_kept",
        "_limit",
        "_on_message",
        "_publish_limit",
        "_retention",
        "_service",
        "channel",
    )

    def __init__(
        self,
        node: Node,
        conn: Connection,
        identity: Identity | None,
        channel: str | None,
        on_message: OnMessage,
    ) -> None:
        super().__init__(conn)
        self._service = node.broadcast
        self._on_message = on_message
        self._limit = self._service.settings.max_message_bytes
        self._publish_limit = node.publish_limit
        self._bucket = self._publish_limit.bucket()  # None when there is no limit
        self.channel = channel
        # Rules never change at run time: decided once, acted on at the first message.
        self._forbidden = (
            node.auth.may_publish(identity, channel, subscribed=True)
            if channel is not None
            else None
        )
        self._expiry = expire_at_exp(conn, identity)
        # A history channel's publications are numbered by the store, in the order sent.
        self._retention = node.history.retention(channel) if channel is not None else None
        self._kept = OrderedPublisher(node.history) if self._retention is not None else None

    def handle(self, event: Any) -> bool:
        """One message from the client; False (and :attr:`code`) when it ends the session."""
        conn = self.conn
        text = event.get("text")
        message = (
            Message.from_text(text) if text is not None else Message.from_bytes(event["bytes"])
        )
        if message.size > self._limit:
            self.code = CloseCode.MESSAGE_TOO_BIG
            conn.close(self.code, f"message of {message.size} bytes exceeds {self._limit}")
            return False
        forbidden = self._forbidden
        if forbidden is not None:
            self.code = CloseCode.FORBIDDEN
            conn.close(self.code, forbidden.message)
            return False
        bucket = self._bucket
        stats = self._service.stats
        if bucket is None or bucket.take():
            stats.received()
            kept = self._kept
            if kept is None:
                self._on_message(self._service, conn, message)
            elif not kept.offer(self.channel, message, self._retention):  # type: ignore[arg-type]
                self.code = CloseCode.SLOW_CONSUMER  # publishing faster than history keeps
                conn.close(self.code, "publishing faster than the history store")
                return False
        elif bucket.exhausted:  # dropped, and the client keeps at it: closed
            self.code = CloseCode.RATE_LIMITED
            stats.rate_limited(conn, closing_over=self._publish_limit.describe())
            conn.close(self.code, RATE_LIMITED_REASON)
            return False
        else:  # over the publish rate: dropped and counted
            stats.rate_limited(conn)
        return True

    async def finish(self) -> None:
        """Stop the token's expiry timer, flush the history publisher, unregister."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self._kept is not None:
            await self._kept.aclose()
        await self._service.disconnect(self.conn, self.code)


async def run_session(
    websocket: WebSocket, *, endpoint: str, channel: str | None, on_message: OnMessage
) -> None:
    """Serve one client until it leaves: every message it sends goes to ``on_message``."""
    node = node_of(websocket)
    admitted = await admit(websocket, endpoint=endpoint, channel=channel, node=node)
    if admitted is None:
        return
    conn, identity = admitted
    await serve(RawSession(node, conn, identity, channel, on_message), websocket)
