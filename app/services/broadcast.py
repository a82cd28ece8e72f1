"""BroadcastService: the worker's registry of connections, fan-out by channel, and counters."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import time
from typing import Any

from starlette.websockets import WebSocket

from app.config import Settings
from app.services.backends import Backend
from app.services.backends.base import CONTROL_CHANNEL
from app.services.close_codes import PROTOCOL_ERRORS, CloseCode
from app.services.cluster import ClusterView
from app.services.connection import Connection, Cork, OutboxLimits
from app.services.counters import Counters
from app.services.gc_monitor import GcMonitor
from app.services.message import Message
from app.services.server_transport import AbortableTransport, DirectWriter

logger = logging.getLogger("fanout")

WRITE_PATHS = ("asgi", "direct")
"""How a connection's messages reach its socket (see Connection.path)."""
ENDPOINTS = ("broadcast", "echo")
"""Socket endpoints /stats always reports, with zero when nobody is connected."""

GAP_NOTICE_TYPE = "fanout.gap"
"""``type`` of the text message subscribers get when the backend may have lost messages."""


class BroadcastService:
    """Tracks this worker's WebSocket connections and fans messages out to them.

    Connections are keyed by channel (``/ws/broadcast`` is the ``default`` channel); echo
    connections are tracked but belong to no channel. ``publish`` delivers to local
    subscribers at once and hands the message to the backend for every other worker.
    """

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.counters = Counters()
        self._limits = OutboxLimits(
            max_messages=settings.outbox_max_messages,
            max_bytes=settings.outbox_max_bytes,
            close_timeout=settings.close_timeout,
        )
        self._ids = itertools.count(1)
        self._connections: dict[int, Connection] = {}
        # A dict per channel keeps delivery order stable and removal O(1).
        self._channels: dict[str, dict[int, Connection]] = {}
        self._by_endpoint: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self._by_path: dict[str, int] = dict.fromkeys(WRITE_PATHS, 0)
        self._started_at = time.monotonic()
        self._stats_task: asyncio.Task[None] | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.gc_monitor = GcMonitor()
        self._cork = Cork()
        self.gap_notices = 0
        """Times this worker told its clients that messages from elsewhere may be missing."""
        self.cluster = ClusterView(
            worker_id=self.worker_id,
            interval=settings.heartbeat_interval,
            expiry=settings.heartbeat_expiry,
            publish=backend.publish,
            snapshot=self.snapshot,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the backend, the heartbeat and the periodic stats log line."""
        self._started_at = time.monotonic()
        self.gc_monitor.start()
        await self.backend.start(self._from_backend, self._gap)
        await self.cluster.start()
        if self.settings.stats_log_interval > 0:
            self._stats_task = asyncio.create_task(self._log_stats(), name="fanout-stats-log")

    async def stop(self) -> None:
        """Close every remaining connection with 1001 and stop what the service owns."""
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        await self.cluster.stop()
        remaining = list(self._connections.values())
        for conn in remaining:
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        await asyncio.gather(*(conn.finish() for conn in remaining))
        await self.backend.stop()
        self.gc_monitor.stop()

    # -- connections -----------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Open WebSocket connections on this worker."""
        return len(self._connections)

    def has_capacity(self) -> bool:
        """Whether one more connection fits under FANOUT_MAX_CONNECTIONS."""
        limit = self.settings.max_connections
        return limit == 0 or len(self._connections) < limit

    def reject(self, reason: str, peer: str, path: str) -> None:
        """Count and log a refused handshake."""
        self.counters.rejected[reason] += 1
        logger.warning("rejected %s from %s: %s", path, peer, reason)

    def connect(
        self,
        websocket: WebSocket,
        *,
        endpoint: str,
        channel: str | None,
        transport: AbortableTransport | None,
        direct: DirectWriter | None = None,
    ) -> Connection:
        """Register a client (before its handshake completes) and return its Connection."""
        peer = peer_of(websocket)
        conn = Connection(
            conn_id=next(self._ids),
            endpoint=endpoint,
            channel=channel,
            peer=peer,
            websocket=websocket,
            transport=transport,
            direct=direct,
            cork=self._cork if direct is not None else None,
            limits=self._limits,
            counters=self.counters,
            on_overflow=self._on_slow_consumer,
        )
        self._connections[conn.id] = conn
        self._by_endpoint[endpoint] = self._by_endpoint.get(endpoint, 0) + 1
        self._by_path[conn.path] += 1
        if channel is not None:
            members = self._channels.get(channel)
            if members is None:
                members = self._channels[channel] = {}
                self.backend.subscribe(channel)
            members[conn.id] = conn
        self.counters.connections_opened += 1
        logger.info(
            "connect %s peer=%s id=%d path=%s (connections: %d)",
            _label(conn),
            peer,
            conn.id,
            conn.path,
            len(self._connections),
        )
        return conn

    async def disconnect(self, conn: Connection, code: int) -> None:
        """Forget a client whose session ended with ``code`` and release what it held."""
        if self._connections.pop(conn.id, None) is None:
            return
        self._by_endpoint[conn.endpoint] -= 1
        self._by_path[conn.path] -= 1
        if conn.channel is not None:
            members = self._channels.get(conn.channel)
            if members is not None:
                members.pop(conn.id, None)
                if not members:
                    del self._channels[conn.channel]
                    self.backend.unsubscribe(conn.channel)
        final_code = conn.close_code if conn.close_code is not None else code
        self.counters.closes[final_code] += 1
        level = logging.WARNING if final_code in PROTOCOL_ERRORS else logging.INFO
        logger.log(
            level,
            "disconnect %s peer=%s id=%d code=%d (connections: %d)",
            _label(conn),
            conn.peer,
            conn.id,
            final_code,
            len(self._connections),
        )
        await conn.finish()

    # -- messages --------------------------------------------------------------------------

    def received(self) -> None:
        """Count one message received from a client."""
        self.counters.received += 1

    def publish(self, channel: str, message: Message) -> None:
        """Deliver ``message`` to this worker's subscribers and hand it to the backend."""
        self.deliver(channel, message)
        self.backend.publish(channel, message)

    def deliver(self, channel: str, message: Message) -> None:
        """Offer ``message`` to every local subscriber of ``channel``; never waits."""
        members = self._channels.get(channel)
        if not members:
            return
        # No copy of the members: offer() never awaits and never changes the registry (a slow
        # consumer only starts closing; it leaves when its session ends).
        for conn in members.values():
            conn.offer(message)

    def _from_backend(self, channel: str, message: Message) -> None:
        if channel == CONTROL_CHANNEL:
            self.cluster.receive(message)
        else:
            self.deliver(channel, message)

    def _gap(self, reason: str) -> None:
        """Tell every local subscriber that messages from elsewhere may have been missed."""
        notice = Message.from_text(
            json.dumps({"type": GAP_NOTICE_TYPE, "reason": reason}, separators=(",", ":"))
        )
        self.gap_notices += 1
        subscribers = sum(len(m) for m in self._channels.values())
        logger.warning(
            "backend gap (%s): telling %d subscriber(s) messages may be missing",
            reason,
            subscribers,
        )
        for members in self._channels.values():
            for conn in members.values():
                conn.offer(notice)

    def _on_slow_consumer(self, conn: Connection, dropped: int) -> None:
        self.counters.slow_consumer_disconnects += 1
        self.counters.dropped += dropped
        logger.warning(
            "slow consumer %s peer=%s id=%d: outbox full, %d message(s) dropped, closing with %d",
            _label(conn),
            conn.peer,
            conn.id,
            dropped,
            CloseCode.SLOW_CONSUMER,
        )

    # -- reporting -------------------------------------------------------------------------

    def uptime(self) -> float:
        """Seconds since the service started."""
        return time.monotonic() - self._started_at

    def cluster_snapshot(self) -> dict[str, Any]:
        """/stats: this worker's figures merged with every other live worker's."""
        return self.cluster.merged(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """This worker's own figures, JSON-able; the heartbeat other workers receive."""
        c = self.counters
        return {
            "uptime_seconds": round(self.uptime(), 3),
            "backend": self.backend.status(),
            "connections": {
                "total": len(self._connections),
                "by_endpoint": dict(sorted(self._by_endpoint.items())),
                "by_path": dict(sorted(self._by_path.items())),
            },
            "channels": {name: len(m) for name, m in sorted(self._channels.items())},
            "messages": {"received": c.received, "delivered": c.delivered, "dropped": c.dropped},
            "slow_consumer_disconnects": c.slow_consumer_disconnects,
            "gap_notices": self.gap_notices,
            "connections_opened": c.connections_opened,
            "rejected": dict(sorted(c.rejected.items())),
            "closes": {str(code): n for code, n in sorted(c.closes.items())},
            "http_errors": {str(status): n for status, n in sorted(c.http_errors.items())},
            "worker": {
                "id": self.worker_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "connections": len(self._connections),
                "uptime_seconds": round(self.uptime(), 3),
                "gc": self.gc_monitor.snapshot(),
            },
        }

    async def _log_stats(self) -> None:
        interval = self.settings.stats_log_interval
        while True:
            await asyncio.sleep(interval)
            c = self.counters
            logger.info(
                "connections: %d (%s) received=%d delivered=%d slow_consumers=%d",
                len(self._connections),
                ", ".join(f"{k}={v}" for k, v in sorted(self._by_endpoint.items()) if v) or "-",
                c.received,
                c.delivered,
                c.slow_consumer_disconnects,
            )


def peer_of(websocket: WebSocket) -> str:
    """The client's address as log lines show it."""
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "unknown"


def _label(conn: Connection) -> str:
    return conn.endpoint if conn.channel is None else f"{conn.endpoint}#{conn.channel}"
