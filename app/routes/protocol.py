"""WS /ws: fanout.v1, many channels over one socket (commands in, replies and pushes out)."""

from __future__ import annotations

from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app.routes.context import node_of
from app.routes.events import EventSession, serve
from app.routes.session import V1_ENDPOINT, admit, deny
from app.services.broadcast import BroadcastService
from app.services.connection import Connection
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
    node = node_of(websocket)
    admitted = await admit(websocket, endpoint=V1_ENDPOINT, channel=None, node=node)
    if admitted is None:
        return
    conn, identity = admitted
    service = node.broadcast
    settings = service.settings
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
        publish_limit=node.publish_limit,
    )
    # A client that asked in the query string did not offer the subprotocol: naming it
    # in the answer would fail its handshake.
    chosen = SUBPROTOCOL if asked == "header" else None
    await serve(V1Session(conn, session, service, settings.max_message_bytes), websocket, chosen)


class V1Session(EventSession):
    """The socket side of a fanout.v1 session: frames to the :class:`ProtocolSession`."""

    __slots__ = ("_max_bytes", "_protocol", "_service")

    def __init__(
        self,
        conn: Connection,
        protocol: ProtocolSession,
        service: BroadcastService,
        max_bytes: int,
    ) -> None:
        super().__init__(conn)
        self._protocol = protocol
        self._service = service
        self._max_bytes = max_bytes

    def handle(self, event: Any) -> bool:
        """One frame of commands; False (and :attr:`code`) when the session closes."""
        text = event.get("text")
        if text is not None:
            closing = self._protocol.on_text(text, _utf8_size(text, self._max_bytes))
        else:
            closing = self._protocol.on_binary(event["bytes"])
        if closing is None:
            return True
        self.code = closing
        return False

    async def finish(self) -> None:
        """Release the subscriptions and commands, then unregister."""
        await self._protocol.aclose()
        await self._service.disconnect(self.conn, self.code)


def _utf8_size(text: str, limit: int) -> int:
    """The UTF-8 size of ``text``, exact where it matters against ``limit``.

    A character is 1 to 4 bytes, so most frames are told from their length alone and
    only one near the limit is encoded to count.
    """
    if 4 * len(text) <= limit or text.isascii():
        return len(text)
    return len(text.encode())


routes: list[WebSocketRoute] = [WebSocketRoute(PATH, fanout_v1)]
