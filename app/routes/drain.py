"""POST /api/drain: drain this server (every worker of it), as SIGTERM does, and keep running.

Guarded by the admin key, and disabled (403) when FANOUT_ADMIN_KEY is unset. The worker that
takes the request drains and tells its sibling workers over the backend's control channel;
the answer comes at once (202), the drain goes on over FANOUT_DRAIN_SECONDS. The process
keeps running, draining, until it is stopped: a Kubernetes preStop hook calls this, then
SIGTERM follows (and waits for a drain under way rather than starting another).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from app.logging_setup import LOGGER_NAME
from app.routes.admin import admin_key_required
from app.routes.context import node_of

logger = logging.getLogger(LOGGER_NAME)


@admin_key_required
async def drain(request: Request) -> JSONResponse:
    """``{"result":{"draining":true,"started":S,"drain_seconds":W,"connections":N}}``, 202.

    ``started`` is false when this worker was already draining (the request is harmless:
    the siblings are told again); ``connections`` is this worker's count when asked.
    """
    node = node_of(request)
    connections = node.broadcast.connection_count
    started = node.drain_server()
    if started:
        client = request.client
        logger.info(
            "drain requested by %s", f"{client.host}:{client.port}" if client else "unknown"
        )
    body = {
        "draining": True,
        "started": started,
        "drain_seconds": node.drain.window,
        "connections": connections,
    }
    return JSONResponse({"result": body}, status_code=202)


routes: list[BaseRoute] = [Route("/api/drain", drain, methods=["POST"])]
