"""How a socket session is fed the client's events: by callbacks, or by a receive loop.

A session that loops on ``await receive()`` keeps a task, its coroutine frames and a
waiting future alive for every idle socket (about 1.7 KB each, docs/architecture.md).
Where the server lets it (Fanout's own WebSocket protocol, :mod:`app.server.websocket`),
the session is instead handed the events as they arrive, by a plain call, and its task
ends right after the handshake; its last steps run as a task of their own once the client
has gone. Elsewhere (``--ws wsproto``, hypercorn, ``FANOUT_DIRECT_WRITES=false``) the same
session runs in the receive loop, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from app.server.socket import ServerSocket
from app.services.close_codes import CloseCode
from app.services.connection import Connection

YIELD_EVERY = 32
"""Messages the receive loop handles before it lets the writers run.

uvicorn parses every frame of a socket read at once (up to 256 KiB with uvloop, thousands
of small messages) and ``receive`` then returns them without suspending; without a pause
the fan-out would fill every healthy client's outbox before any writer ran. Sessions fed
by callbacks run only on direct connections, whose outboxes write themselves out every
:data:`~app.services.direct_connection.CORK_MAX_FRAMES` frames without waiting.
"""


class EventSession:
    """One socket's session after its handshake: what to do with each client event.

    Subclasses say what an event does (:meth:`handle`) and how the session ends
    (:meth:`finish`); :func:`serve` feeds them.
    """

    __slots__ = ("_ended", "code", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._ended = False
        self.code: int = CloseCode.NO_STATUS
        """The code the session ended with (the client's, or the one it closed with)."""

    def handle(self, event: Any) -> bool:
        """Act on one ``websocket.receive`` event; False once the session is over (with
        :attr:`code` set)."""
        raise NotImplementedError

    async def finish(self) -> None:
        """Release what the session holds; called once, whatever ended it."""
        raise NotImplementedError

    def on_event(self, event: Any) -> None:
        """The server's callback for each event once the session took them over."""
        if self._ended:
            return  # the session is over: what the client still sends is not read
        if event["type"] == "websocket.disconnect":
            self.code = event.get("code", CloseCode.NO_STATUS)
        elif self.handle(event):
            return
        self._ended = True
        self.conn.socket.run_ending(self.finish())


async def serve(
    session: EventSession, websocket: WebSocket, subprotocol: str | None = None
) -> None:
    """Accept the handshake, then feed ``session`` every event until it ends.

    Returns right after the handshake where the server takes a callback for the events
    (the session then ends in a task the server owns), else loops on ``receive`` and ends
    the session.
    """
    conn = session.conn
    socket = conn.socket
    # Callbacks only on the direct path: its outboxes write themselves out (YIELD_EVERY).
    direct = conn.path == "direct"
    unyielded = 0
    handed_off = False
    try:
        # Fanout's protocol answers a plain handshake itself, without the ASGI messages.
        if not (direct and socket.accept_now(subprotocol)):
            await websocket.accept(subprotocol)
        conn.accepted(websocket.scope)
        if direct and _hand_off(session):
            handed_off = True
            return
        # After accept, Starlette's receive only adds state checks the loop does not need.
        receive = ServerSocket.receive_of(websocket.scope, websocket.receive)
        while True:
            event: Any = await receive()
            if event["type"] == "websocket.disconnect":
                session.code = event.get("code", CloseCode.NO_STATUS)
                break
            if not session.handle(event):
                break
            unyielded += 1
            if unyielded == YIELD_EVERY:
                unyielded = 0
                await asyncio.sleep(0)
    except WebSocketDisconnect as exc:
        session.code = exc.code
    finally:
        if not handed_off:  # else the server's callbacks end it
            session._ended = True
            await session.finish()


def _hand_off(session: EventSession) -> bool:
    """Have the server call ``session`` with each event, where it can; True if it does."""
    send = session.conn.socket.take_events(session.on_event)
    if send is None:
        return False
    # The server's send, not Starlette's wrapper: the WebSocket and its scope are then
    # freed with the handshake's coroutine.
    session.conn.send_through(send)
    return True
