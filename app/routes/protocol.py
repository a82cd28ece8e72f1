"""WS /ws: fanout.v1, many channels over one socket (commands in, replies and pushes out)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.routes.context import node_of, settings_of
from app.routes.session import V1_ENDPOINT, YIELD_EVERY, accept, admit, deny
from app.services.close_codes import CloseCode
from app.services.protocol.session import ProtocolSession

SUBPROTOCOL = "fanout.v1"
PATH = "/ws"
_REQUIRED_MESSAGE = f"subprotocol {SUBPROTOCOL} required"


def negotiate(websocket: WebSocket) -> str | None:
    """How the client asked for fanout.v1: ``"header"`` (Sec-WebSocket-Protocol),
    ``"query"`` (``?proto=fanout.v1``, for clients that cannot set subprotocols), or None."""
    if SUBPROTOCOL in websocket.scope.get("subprotocols", ()):
        return "header"
    if websocket.query_params.get("proto") == SUBPROTOCOL:
        return "query"
    return None


async def fanout_v1(websocket: WebSocket) -> None:
    """Serve one fanout.v1 client until it leaves."""
    asked = negotiate(websocket)
    if asked is None:
        body = {"error": {"code": 400, "message": _REQUIRED_MESSAGE}}
        await deny(websocket, 400, "subprotocol", _REQUIRED_MESSAGE, body)
        return
    admitted = await admit(websocket, endpoint=V1_ENDPOINT, channel=None)
    if admitted is None:
        return
    conn, identity = admitted
    settings = settings_of(websocket)
    node = node_of(websocket)
    service = node.broadcast
    session = ProtocolSession(
        service,
        conn,
        auth=node.auth,
        presence=node.presence,
        history=node.history,
        identity=identity,
        require_auth=settings.require_auth,
        max_subscriptions=settings.max_subscriptions,
        max_message_bytes=settings.max_message_bytes,
        publish_limit=node_of(websocket).publish_limit,
    )
    code: int = CloseCode.NO_STATUS
    unyielded = 0
    try:
        # A client that asked in the query string did not offer the subprotocol: naming it
        # in the answer would fail its handshake.
        receive = await accept(websocket, conn, SUBPROTOCOL if asked == "header" else None)
        while True:
            event: Any = await receive()
            if event["type"] == "websocket.disconnect":
                code = event.get("code", CloseCode.NO_STATUS)
                break
            text = event.get("text")
            if text is not None:
                closing = session.on_text(text, _utf8_size(text, settings.max_message_bytes))
            else:
                closing = session.on_binary(event["bytes"])
            if closing is not None:
                code = closing
                break
            unyielded += 1
            if unyielded == YIELD_EVERY:
                unyielded = 0
                await asyncio.sleep(0)
    except WebSocketDisconnect as exc:
        code = exc.code
    finally:
        await session.aclose()
        await service.disconnect(conn, code)


def _utf8_size(text: str, limit: int) -> int:
    """The UTF-8 size of ``text``, exact where it matters against ``limit``.

    A character is 1 to 4 bytes, so most frames are told from their length alone and
    only one near the limit is encoded to count.
    """
    if 4 * len(text) <= limit or text.isascii():
        return len(text)
    return len(text.encode())


routes: list[WebSocketRoute] = [WebSocketRoute(PATH, fanout_v1)]
