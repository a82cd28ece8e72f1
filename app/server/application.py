"""FanoutApp: Starlette with a short way in for WebSocket sessions."""

from __future__ import annotations

import functools
from collections.abc import Awaitable

from starlette.applications import Starlette
from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from app.server.front import use_front_protocol
from app.server.http import use_deadline_protocols, uvicorn_config
from app.server.socket import probe
from app.server.websocket import use_fanout_websocket_protocol


class FanoutApp(Starlette):
    """Starlette, except that a handshake on a socket path goes straight to its endpoint.

    An open socket keeps every coroutine frame between the server and its receive loop
    alive for its whole life: through Starlette's middleware stack, exception wrappers and
    router that is about 5 KB per idle connection, and socket sessions use none of it.
    HTTP requests and handshakes on other paths still take the full stack.

    When the lifespan starts, uvicorn is told to use the HTTP protocols with a deadline for
    the request head (:mod:`app.server.http`) and the WebSocket protocol with the lean
    handshake (:mod:`app.server.websocket`), before it accepts a connection.
    """

    socket_routes: tuple[WebSocketRoute, ...] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            session = self.socket_session(scope, receive, send)
            if session is not None:
                await session
                return
        elif scope["type"] == "lifespan":
            use_deadline_protocols(receive)
            config = uvicorn_config(receive)
            if config is not None and use_fanout_websocket_protocol(config):
                use_front_protocol(config)
        await super().__call__(scope, receive, send)

    def socket_session(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None] | None:
        """The session of a handshake on a socket path, not yet started; None elsewhere.

        Fanout's WebSocket protocol (:mod:`app.server.websocket`) runs it as the socket's
        task itself, without the frames of uvicorn's ``run_asgi`` and of this ``__call__``.
        """
        route = self._socket_route(scope)
        if route is None:
            return None
        probe(scope, receive, send)  # ProbeMiddleware does it on the long way round
        session: Awaitable[None] = route.endpoint(WebSocket(scope, receive, send))
        return session

    @functools.cached_property
    def _exact_socket_routes(self) -> dict[str, WebSocketRoute]:
        """Socket routes without parameters by path, each only if no route before it
        matches that path too (first match wins). Made on the first handshake, after
        ``socket_routes`` is set."""
        exact: dict[str, WebSocketRoute] = {}
        for i, route in enumerate(self.socket_routes):
            if route.param_convertors:
                continue
            earlier = self.socket_routes[:i]
            if not any(r.path_regex.match(route.path) for r in earlier):
                exact[route.path] = route
        return exact

    def _socket_route(self, scope: Scope) -> WebSocketRoute | None:
        """The socket route for this handshake, updating ``scope`` as the router would.

        One trailing slash is forgiven (``/ws/echo/`` is ``/ws/echo``): browsers and
        clients that build URLs by joining paths add one, and a WebSocket has no redirect.
        """
        path: str = scope["path"]
        exact = self._exact_socket_routes.get(path) if not scope.get("root_path") else None
        if exact is not None:  # what the loop below finds, without a regex per route
            scope["app"] = self
            scope["endpoint"] = exact.endpoint
            scope["path_params"] = dict(scope.get("path_params", {}))
            return exact
        candidates = [scope]
        if len(path) > 1 and path.endswith("/"):
            candidates.append({**scope, "path": path[:-1]})
        for candidate in candidates:
            for route in self.socket_routes:
                match, child_scope = route.matches(candidate)
                if match is Match.FULL:
                    scope["path"] = candidate["path"]
                    scope["app"] = self
                    scope.update(child_scope)
                    return route
        return None
