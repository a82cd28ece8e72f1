"""Where routes find the services the lifespan put on ``app.state``."""

from __future__ import annotations

from typing import cast

from starlette.requests import HTTPConnection

from app.config import Settings
from app.services.broadcast import BroadcastService
from app.services.node import Node
from app.services.stats import StatsService


def node_of(conn: HTTPConnection) -> Node:
    """The worker's services."""
    return cast(Node, conn.app.state.node)


def broadcast_service(conn: HTTPConnection) -> BroadcastService:
    """The worker's BroadcastService."""
    return node_of(conn).broadcast


def stats_service(conn: HTTPConnection) -> StatsService:
    """The worker's StatsService, through which routes report."""
    return node_of(conn).stats


def settings_of(conn: HTTPConnection) -> Settings:
    """The settings the app was built with."""
    return cast(Settings, conn.app.state.settings)
