"""Clear answers for requests no route serves: unknown paths and HTTP on socket paths."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from app.routes.context import stats_service
from app.routes.session import deny

PathCheck = Callable[[Request], Response | None]
"""Looks at a plain HTTP request to a socket path; a Response refuses it before the 426."""


def upgrade_required(check: PathCheck | None = None) -> Callable[[Request], object]:
    """An endpoint for plain HTTP on a WebSocket path: 426, naming the upgrade it needs.

    ``check`` lets the socket's own route refuse a request its handshake would refuse too
    (a bad channel name is 400 either way).
    """

    async def endpoint(request: Request) -> Response:
        refused = check(request) if check is not None else None
        if refused is not None:
            stats_service(request).http_error(refused.status_code)
            return refused
        stats_service(request).http_error(426)
        return JSONResponse(
            {"error": "upgrade_required", "detail": "this path speaks WebSocket only"},
            status_code=426,
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )

    return endpoint


async def socket_not_found(websocket: WebSocket) -> None:
    """A WebSocket handshake on a path that has no socket: 404, not Starlette's 403."""
    await deny(websocket, 404, "unknown_path", f"no WebSocket at {websocket.url.path}")


async def http_error(request: Request, exc: Exception) -> Response:
    """JSON body for HTTP errors (404, 405), counted by status."""
    assert isinstance(exc, HTTPException)
    stats_service(request).http_error(exc.status_code)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def fallback_routes(
    socket_routes: Sequence[WebSocketRoute], checks: Mapping[str, PathCheck]
) -> list[BaseRoute]:
    """426 for plain HTTP on every socket route's path, then 404 for any other handshake.

    Mounted last: they catch what the real routes did not. The paths come from the socket
    routes themselves, so a new socket route gets its 426 without a second list.
    """
    routes: list[BaseRoute] = [
        Route(r.path, upgrade_required(checks.get(r.path)), methods=["GET", "HEAD"])
        for r in socket_routes
    ]
    routes.append(WebSocketRoute("/{path:path}", socket_not_found))
    return routes
