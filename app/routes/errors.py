"""Clear answers for requests no route serves: unknown paths and HTTP on socket paths."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from app.routes.context import broadcast_service
from app.routes.session import deny

SOCKET_PATHS = ("/ws/echo", "/ws/broadcast", "/ws/broadcast/{channel}")


async def upgrade_required(request: Request) -> JSONResponse:
    """A plain HTTP request on a WebSocket path: 426, naming the upgrade it needs."""
    broadcast_service(request).counters.http_errors[426] += 1
    return JSONResponse(
        {"error": "upgrade_required", "detail": "this path speaks WebSocket only"},
        status_code=426,
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )


async def socket_not_found(websocket: WebSocket) -> None:
    """A WebSocket handshake on a path that has no socket: 404, not Starlette's 403."""
    await deny(websocket, 404, "unknown_path", f"no WebSocket at {websocket.url.path}")


async def http_error(request: Request, exc: Exception) -> Response:
    """JSON body for HTTP errors (404, 405), counted by status."""
    assert isinstance(exc, HTTPException)
    broadcast_service(request).counters.http_errors[exc.status_code] += 1
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


routes: list[BaseRoute] = [
    *(Route(path, upgrade_required, methods=["GET", "HEAD"]) for path in SOCKET_PATHS),
    WebSocketRoute("/{path:path}", socket_not_found),
]
"""Mounted last: they catch what the real routes did not."""
