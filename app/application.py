"""FanoutApp: Starlette with a short way in for WebSocket sessions."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from app.services.server_transport import RECEIVE_KEY, SCOPE_KEY


class FanoutApp(Starlette):
    """Starlette, except that a handshake on a socket path goes straight to its endpoint.

    An open socket keeps every coroutine frame between the server and its receive loop
    alive for its whole life: through Starlette's middleware stack, exception wrappers and
    router that is about 5 KB per idle connection, and socket sessions use none of it.
    HTTP requests and handshakes on other paths still take the full stack.
    """

    socket_routes: tuple[WebSocketRoute, ...] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            for route in self.socket_routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope.update(child_scope)
                    # What TransportProbeMiddleware does on the long way round.
                    scope[SCOPE_KEY] = getattr(send, "__self__", None)
                    scope[RECEIVE_KEY] = receive
                    await route.endpoint(WebSocket(scope, receive, send))
                    return
        await super().__call__(scope, receive, send)
