"""GET /stats (connection counts and traffic) and GET /healthz (for load balancers)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from app.routes.admin import admin_only
from app.routes.context import node_of


@admin_only
async def stats(request: Request) -> JSONResponse:
    """Connections, channels and message counts of every worker of the cluster.

    Totals sum every live worker's figures (this worker's live, the others' as of their last
    heartbeat); ``worker``, ``backend`` and ``uptime_seconds`` are this worker's own, and
    ``workers`` lists each worker's. Needs the admin key when FANOUT_ADMIN_KEY is set.
    """
    return JSONResponse(node_of(request).cluster_figures())


async def healthz(request: Request) -> JSONResponse:
    """200 while the backend is up, 503 when it is down (local delivery still works) and
    from the start of a drain (``{"status":"draining"}``: take this instance out).

    Always open, admin key or not: load balancers ask it.
    """
    node = node_of(request)
    backend = node.backend.status()
    if node.drain.draining:
        return JSONResponse({"status": "draining", "backend": backend}, status_code=503)
    up = backend.get("status") == "up"
    body = {"status": "ok" if up else "degraded", "backend": backend}
    return JSONResponse(body, status_code=200 if up else 503)


routes: list[BaseRoute] = [
    Route("/stats", stats, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
