"""GET /metrics: every live worker's figures in Prometheus's text format."""

from __future__ import annotations

from typing import cast

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.routes.admin import admin_only


@admin_only
async def metrics(request: Request) -> Response:
    """The exposition format the scraper asks for (Prometheus text, or OpenMetrics)."""
    registry = cast(CollectorRegistry, request.app.state.metrics_registry)
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})


routes: list[BaseRoute] = [Route("/metrics", metrics, methods=["GET"])]
