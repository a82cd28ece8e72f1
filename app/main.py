"""The ASGI application: ``uvicorn app.main:app``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute

from app.application import FanoutApp
from app.config import Settings, build_or_exit
from app.logging_setup import configure_logging
from app.routes import broadcast, echo, errors, pages, stats
from app.services.backends import create_backend
from app.services.broadcast import BroadcastService
from app.services.server_transport import TransportProbeMiddleware


def create_app(settings: Settings | None = None) -> FanoutApp:
    """Build the app; its services are created and stopped by the lifespan."""
    settings = settings if settings is not None else Settings.from_env()
    configure_logging(settings)
    create_backend(settings)  # fail at import on a bad FANOUT_BACKEND, not later

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = BroadcastService(settings, create_backend(settings))
        await service.start()
        app.state.broadcast = service
        if settings.gc_freeze:
            # Start-up objects (modules, routes) never die: keep them out of every
            # collection so full collections, which pause the loop, scan less.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await service.stop()

    app = FanoutApp(
        routes=[*pages.routes, *stats.routes, *echo.routes, *broadcast.routes, *errors.routes],
        middleware=[Middleware(TransportProbeMiddleware)],
        exception_handlers={HTTPException: errors.http_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.socket_routes = tuple(
        r for r in (*echo.routes, *broadcast.routes) if isinstance(r, WebSocketRoute)
    )
    return app


app = build_or_exit(create_app)
