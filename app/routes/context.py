"""Where routes find the services the lifespan put on ``app.state``."""

from __future__ import annotations

from typing import cast

from starlette.requests import HTTPConnection

from app.config import Settings
from app.services.broadcast import BroadcastService


def broadcast_service(conn: HTTPConnection) -> BroadcastService:
    """The worker's BroadcastService."""
    return cast(BroadcastService, conn.app.state.broadcast)


def settings_of(conn: HTTPConnection) -> Settings:
    """The settings the app was built with."""
    return cast(Settings, conn.app.state.settings)
