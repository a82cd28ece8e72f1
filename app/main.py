"""The ASGI application: ``uvicorn app.main:app``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from app.config import Settings, load_channel_rules
from app.logging_setup import configure_logging
from app.routes import api, broadcast, drain, echo, errors, metrics, pages, protocol, stats
from app.server.application import FanoutApp
from app.server.http import DEADLINE_KEY, HandshakeDeadline, handshake_deadline
from app.server.signals import drain_on_sigterm
from app.server.socket import ProbeMiddleware
from app.services.backends import create_backend
from app.services.metrics import metrics_registry
from app.services.node import Node
from app.services.open_files import raise_open_file_limit
from app.startup import build_or_exit


def create_app(settings: Settings | None = None) -> FanoutApp:
    """Build the app; its services are created and stopped by the lifespan."""
    settings = settings if settings is not None else Settings.from_env()
    configure_logging(settings)
    create_backend(settings)  # fail at import on a bad FANOUT_BACKEND, not later
    rules = load_channel_rules(settings)  # likewise for a bad rules file

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, HandshakeDeadline]]:
        raise_open_file_limit(settings.max_connections)  # in each worker process
        node = Node(settings, create_backend(settings), rules)
        await node.start()
        app.state.node = node
        app.state.metrics_registry = metrics_registry(node.every_worker)

        async def drain_on_term(graceful_timeout: float | None) -> None:
            # uvicorn's --timeout-graceful-shutdown only starts once the drain is over:
            # where it is set, the drain fits in it too (docs/operations.md).
            seconds = settings.drain_seconds
            if graceful_timeout is not None:
                seconds = min(seconds, graceful_timeout)
            node.drain.start("SIGTERM", seconds)
            await node.drain.wait()

        sigterm = drain_on_sigterm(drain_on_term)
        if settings.gc_freeze:
            # Start-up objects (modules, routes) never die: keep them out of every
            # collection so full collections, which pause the loop, scan less.
            gc.collect()
            gc.freeze()
            node.stats.gc_monitor.froze()
        thresholds = settings.gc_thresholds()
        if thresholds is not None:
            # Fewer collections for connection churn: each handshake leaves cycles and
            # promotes objects (docs/benchmarks.md, "Issue 14: garbage collector thresholds").
            gc.set_threshold(*thresholds)
        # The lifespan state reaches uvicorn's protocols (app/server/http.py), which
        # close a connection whose request head is not in within the timeout.
        deadline = handshake_deadline(settings.handshake_timeout, node.stats.handshake_timeout)
        try:
            yield {DEADLINE_KEY: deadline}
        finally:
            deadline.pending.close()
            if sigterm is not None:
                sigterm.remove()
            await node.stop()

    socket_routes = (*echo.routes, *broadcast.routes, *protocol.routes)
    app = FanoutApp(
        routes=[
            *pages.routes,
            *stats.routes,
            *metrics.routes,
            *drain.routes,  # before the API's catch-all
            *api.routes,
            *socket_routes,
            *errors.fallback_routes(socket_routes, broadcast.http_checks),
        ],
        middleware=[Middleware(ProbeMiddleware)],
        exception_handlers={HTTPException: errors.http_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.socket_routes = socket_routes
    return app


app = build_or_exit(create_app)
