"""Node: a worker's services, wired together and started and stopped in order."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.services.backends import Backend
from app.services.backends.base import CONTROL_CHANNEL
from app.services.broadcast import BroadcastService
from app.services.cluster import ClusterView
from app.services.figures import WorkerFigures
from app.services.idempotency import create_idempotency_store
from app.services.limits import PublishLimit
from app.services.message import Message
from app.services.origins import OriginPolicy
from app.services.stats import StatsService


class Node:
    """One worker: its reporting, its connections and fan-out, and its view of the cluster.

    The backend's messages come here first: the control channel (heartbeats) goes to the
    :class:`ClusterView`, every other channel to the :class:`BroadcastService`.
    """

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.backend = backend
        self.stats = StatsService(log_interval=settings.stats_log_interval)
        self.broadcast = BroadcastService(settings, backend, self.stats)
        self.idempotency = create_idempotency_store(settings, backend)
        self.origins = OriginPolicy.from_setting(
            settings.allowed_origins, require=settings.require_origin
        )
        """Which web pages may open a socket (checked at every handshake)."""
        self.publish_limit = PublishLimit(
            settings.client_publish_rate, settings.client_publish_burst
        )
        """Each socket's publish rate (a bucket per connection, None when off)."""
        self.cluster = ClusterView(
            worker_id=self.stats.worker_id,
            interval=settings.heartbeat_interval,
            expiry=settings.heartbeat_expiry,
            publish=backend.publish,
            snapshot=self.figures,
        )

    async def start(self) -> None:
        """Start reporting, connect the backend, then announce this worker."""
        await self.stats.start()
        await self.backend.start(self._from_backend, self.broadcast.gap)
        await self.idempotency.start()
        await self.cluster.start()

    async def stop(self) -> None:
        """Say goodbye, close every connection with 1001, disconnect, stop reporting."""
        await self.cluster.stop()
        await self.broadcast.close_all()
        await self.backend.stop()
        await self.idempotency.stop()
        await self.stats.stop()

    def figures(self) -> WorkerFigures:
        """This worker's own figures (its heartbeat)."""
        broadcast = self.broadcast
        return self.stats.figures(
            broadcast.channel_sizes(), broadcast.subscriptions, self.backend.status()
        )

    def cluster_figures(self) -> dict[str, Any]:
        """/stats: this worker's figures added up with every other live worker's."""
        return self.cluster.merged(self.figures())

    def _from_backend(self, channel: str, message: Message) -> None:
        if channel == CONTROL_CHANNEL:
            self.cluster.receive(message)
        else:
            self.broadcast.deliver(channel, message)
