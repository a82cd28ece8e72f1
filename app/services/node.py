"""Node: a worker's services, wired together and started and stopped in order."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.services.auth import Authorizer
from app.services.backends import Backend
from app.services.backends.base import CONTROL_CHANNEL
from app.services.broadcast import BroadcastService
from app.services.cluster import ClusterView
from app.services.drain import Drain
from app.services.figures import WorkerFigures
from app.services.history.factory import create_history_store
from app.services.history.service import HistoryService
from app.services.idempotency import create_idempotency_store
from app.services.limits import PublishLimit
from app.services.message import Message
from app.services.origins import OriginPolicy
from app.services.presence import PresenceService
from app.services.presence_wire import PREFIX as PRESENCE_PREFIX
from app.services.rules import ChannelRules
from app.services.stats import StatsService
from app.services.tokens import TokenVerifier


class Node:
    """One worker: its reporting, its connections and fan-out, and its view of the cluster.

    The backend's messages come here first: the control channel goes to the
    :class:`PresenceService` (its messages) or the :class:`ClusterView` (heartbeats), every
    other channel to the :class:`BroadcastService`.
    """

    def __init__(
        self, settings: Settings, backend: Backend, rules: ChannelRules | None = None
    ) -> None:
        self.backend = backend
        self.auth = Authorizer(
            rules if rules is not None else ChannelRules(),
            TokenVerifier(
                hmac_secret=settings.token_hmac_secret,
                public_key=settings.token_public_key,
                audience=settings.token_audience,
                issuer=settings.token_issuer,
            ),
        )
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
        self.drain = Drain(
            seconds=settings.drain_seconds,
            close_timeout=settings.close_timeout,
            connections=self.broadcast.connections,
            on_close=self.stats.drained,
        )
        broadcast = self.broadcast
        self.history = HistoryService(
            create_history_store(settings, backend),
            self.auth.rules,
            broadcast,
            gap=lambda channel, reason: broadcast.gap(reason, channel),
        )
        self.presence = PresenceService(
            worker_id=self.stats.worker_id,
            rules=self.auth.rules,
            interval=settings.heartbeat_interval,
            expiry=settings.heartbeat_expiry,
            max_members=settings.presence_max_members,
            max_clients=settings.presence_max_clients,
            publish_control=lambda message: backend.publish(CONTROL_CHANNEL, message),
            publish_event=self.broadcast.publish,
            deliver_event=self.broadcast.deliver,
        )
        self.cluster = ClusterView(
            worker_id=self.stats.worker_id,
            interval=settings.heartbeat_interval,
            expiry=settings.heartbeat_expiry,
            publish=backend.publish,
            snapshot=self.figures,
            on_drain=self._drain_ordered,
        )

    async def start(self) -> None:
        """Start reporting, connect the backend, then announce this worker."""
        await self.stats.start()
        await self.backend.start(self._from_backend, self._gap)
        await self.idempotency.start()
        await self.history.start()
        await self.presence.start()
        await self.cluster.start()

    async def stop(self) -> None:
        """Say goodbye, close every connection with 1001, disconnect, stop reporting.

        A drain still under way (a second SIGTERM hurried the shutdown) is cancelled.
        """
        await self.drain.stop()
        await self.presence.stop()
        await self.cluster.stop()
        await self.broadcast.close_all()
        await self.backend.stop()
        await self.history.stop()
        await self.idempotency.stop()
        await self.stats.stop()

    def drain_server(self) -> bool:
        """``POST /api/drain``: drain this worker and tell the other workers of its server to
        drain too; False if this worker was already draining."""
        self.cluster.send_drain()
        return self.drain.start("POST /api/drain")

    def figures(self) -> WorkerFigures:
        """This worker's own figures (its heartbeat)."""
        broadcast = self.broadcast
        return self.stats.figures(
            broadcast.channel_sizes(),
            broadcast.subscriptions,
            self.backend.status(),
            self.drain.draining,
            presence_members=self.presence.members,
        )

    def every_worker(self) -> list[tuple[float, WorkerFigures]]:
        """/metrics: every live worker's (heartbeat age, figures), this worker's live first."""
        return self.cluster.everyone(self.figures())

    def cluster_figures(self) -> dict[str, Any]:
        """/stats: this worker's figures added up with every other live worker's."""
        return self.cluster.merged(self.figures())

    def _drain_ordered(self, sender: str) -> None:
        self.drain.start(f"told by worker {sender}")

    def _from_backend(self, channel: str, message: Message) -> None:
        if channel == CONTROL_CHANNEL:
            if message.data.startswith(PRESENCE_PREFIX):
                self.presence.receive(message)
            else:
                self.cluster.receive(message)
        elif message.offset is not None:
            self.history.deliver(channel, message)  # in offset order, holes filled
        else:
            self.broadcast.deliver(channel, message)

    def _gap(self, reason: str, channel: str | None = None, /) -> None:
        """The backend may have lost messages (of ``channel``, or of any channel).

        History channels followed here are refilled from the store instead of being told
        (while the backend is down there is nothing to refill yet: the reconnect does it);
        a history that cannot be refilled is told by the sequencer.
        """
        sequencer = self.history.sequencer
        names = [channel] if channel is not None else self.broadcast.channel_names()
        kept = frozenset(
            name
            for name in names
            if self.history.retention(name) is not None and sequencer.position(name) is not None
        )
        if reason != "backend_down":
            for name in kept:
                sequencer.refill(name)
        if channel is None:
            self.broadcast.gap(reason, None, exclude=kept)
        elif channel not in kept:
            self.broadcast.gap(reason, channel)
