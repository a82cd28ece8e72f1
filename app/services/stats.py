"""StatsService: a worker's counters, its log lines about traffic, and its figures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from app.logging_setup import LOGGER_NAME
from app.services.close_codes import PROTOCOL_ERRORS, CloseCode
from app.services.connection import Connection
from app.services.counters import Counters
from app.services.figures import (
    ConnectionFigures,
    LatencyFigures,
    MessageFigures,
    WorkerFigures,
    WorkerInfo,
)
from app.services.gc_monitor import GcMonitor
from app.services.latency import WriteLatency

logger = logging.getLogger(LOGGER_NAME)

WRITE_PATHS = ("asgi", "direct")
"""How a connection's messages reach its socket (see Connection.path)."""
ENDPOINTS = ("broadcast", "echo", "ws")
"""Socket endpoints /stats always reports, with zero when nobody is connected."""

QUIET_LOG_EVERY = 20
"""An unchanged worker still writes its status line every this many intervals."""


class StatsService:
    """Counts and reports what happens on this worker; owns no connection.

    Services and routes report through its methods (a refused handshake, an HTTP error, a
    connection opened or closed, a slow consumer, a gap) and it counts, logs one line, and
    folds everything into :meth:`figures`. The hot path (deliveries, received messages)
    increments :attr:`counters` directly: one integer add, no call; the worker's cork
    observes :attr:`write_latency` once per loop turn.
    """

    def __init__(self, *, log_interval: float) -> None:
        self.counters = Counters()
        self.write_latency = WriteLatency()
        self.gc_monitor = GcMonitor()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id = f"{self.host}:{self.pid}"
        self.tag = os.urandom(4).hex()
        """This process's part of every client id: unique across workers, hosts, restarts."""
        self.gap_notices = 0
        self.connections = 0
        self._by_endpoint: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self._by_path: dict[str, int] = dict.fromkeys(WRITE_PATHS, 0)
        self._log_interval = log_interval
        self._started_at = time.monotonic()
        self._log_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start timing GC pauses and, if configured, the periodic status line."""
        self._started_at = time.monotonic()
        self.gc_monitor.start()
        if self._log_interval > 0:
            self._log_task = asyncio.create_task(self._log_status(), name="fanout-stats-log")

    async def stop(self) -> None:
        """Stop the status line and the GC timing."""
        if self._log_task is not None:
            self._log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
            self._log_task = None
        self.gc_monitor.stop()

    def uptime(self) -> float:
        """Seconds since the service started."""
        return time.monotonic() - self._started_at

    # -- reports ----------------------------------------------------------------------------

    def opened(self, conn: Connection) -> None:
        """A client was registered (before its handshake completes)."""
        self.connections += 1
        self._by_endpoint[conn.endpoint] = self._by_endpoint.get(conn.endpoint, 0) + 1
        self._by_path[conn.path] += 1
        self.counters.connections_opened += 1
        if not logger.isEnabledFor(logging.INFO):
            return  # the arguments below cost ~2 us per connect to build for nothing
        logger.info(
            "connect %s peer=%s id=%s path=%s (connections: %d)",
            label(conn),
            conn.peer,
            self.client_id(conn),
            conn.path,
            self.connections,
        )

    def closed(self, conn: Connection, code: int) -> None:
        """A client's session ended with ``code``."""
        self.connections -= 1
        self._by_endpoint[conn.endpoint] -= 1
        self._by_path[conn.path] -= 1
        self.counters.closes[code] += 1
        level = logging.WARNING if code in PROTOCOL_ERRORS else logging.INFO
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "disconnect %s peer=%s id=%s code=%d (connections: %d)",
            label(conn),
            conn.peer,
            self.client_id(conn),
            code,
            self.connections,
        )

    def slow_consumer(self, conn: Connection, dropped: int) -> None:
        """``conn``'s outbox overflowed; ``dropped`` messages were discarded."""
        self.counters.slow_consumer_disconnects += 1
        self.counters.dropped += dropped
        logger.warning(
            "slow consumer %s peer=%s id=%s: outbox full, %d message(s) dropped, closing with %d",
            label(conn),
            conn.peer,
            self.client_id(conn),
            dropped,
            CloseCode.SLOW_CONSUMER,
        )

    def rejected(self, reason: str, peer: str, path: str, note: str = "") -> None:
        """A handshake was refused for ``reason`` (``note``: what the log line adds)."""
        self.counters.rejected[reason] += 1
        logger.warning("rejected %s from %s: %s%s", path, peer, reason, note and f" ({note})")

    def rate_limited(self, conn: Connection, closing_over: str = "") -> None:
        """A message from ``conn`` was refused by the publish rate limit; ``closing_over``
        (the limit) when the client is closed for it: the one line logged about it."""
        self.counters.rate_limited += 1
        if closing_over:
            logger.warning(
                "rate limited %s peer=%s id=%s: kept publishing over %s, closing with %d",
                label(conn),
                conn.peer,
                self.client_id(conn),
                closing_over,
                CloseCode.RATE_LIMITED,
            )

    def handshake_timeout(self, peer: str, timeout: float) -> None:
        """A connection from ``peer`` sent no complete request head within ``timeout`` s."""
        self.counters.handshake_timeouts += 1
        logger.warning(
            "handshake timeout from %s: no complete request within %g s, connection closed",
            peer,
            timeout,
        )

    def received(self) -> None:
        """One message arrived from a client."""
        self.counters.received += 1

    def http_error(self, status: int) -> None:
        """An HTTP request was answered with error ``status``."""
        self.counters.http_errors[status] += 1

    def admin_refused(self, path: str, peer: str, why: str) -> None:
        """``path`` needs the admin key and the request's was ``why`` ('missing', 'wrong').

        Counted as an HTTP 401; the line never shows a key, the presented one included.
        """
        self.counters.http_errors[401] += 1
        logger.warning("refused %s from %s: admin key %s", path, peer, why)

    def gap(self, reason: str, subscribers: int, channel: str | None = None) -> None:
        """``subscribers`` (of ``channel``, or of every channel) were told that messages from
        elsewhere may be missing. A notice to one channel is logged by the backend that saw
        the loss (one line for a run of them), so it is counted here but not logged."""
        self.gap_notices += 1
        if channel is not None:
            return
        logger.warning(
            "backend gap (%s): telling %d subscriber(s) messages may be missing",
            reason,
            subscribers,
        )

    def client_id(self, conn: Connection) -> str:
        """``conn``'s id in log lines and fanout.v1: unique across workers and hosts."""
        return f"{self.tag}-{conn.id}"

    def protocol_error(self, conn: Connection, code: int, message: str, *, log: bool) -> None:
        """A fanout.v1 command was refused with ``code`` (or the frame closed the socket)."""
        self.counters.protocol_errors[code] += 1
        if log:
            logger.warning(
                "protocol error %d from %s id=%s: %s",
                code,
                conn.peer,
                self.client_id(conn),
                message[:200],
            )

    def drained(self) -> None:
        """A drain closed one connection with 1012."""
        self.counters.drained += 1

    def api_published(self) -> None:
        """A message was published through the HTTP API."""
        self.counters.api_published += 1

    # -- figures ----------------------------------------------------------------------------

    def figures(
        self,
        channels: Mapping[str, int],
        subscriptions: int,
        backend: dict[str, Any],
        draining: bool = False,
        *,
        presence_members: int = 0,
    ) -> WorkerFigures:
        """This worker's figures, given its channels' subscriber counts, its fanout.v1
        subscriptions, its backend's status, whether it is draining, and its own presence
        members."""
        c = self.counters
        uptime = round(self.uptime(), 3)
        return WorkerFigures(
            uptime_seconds=uptime,
            backend=backend,
            connections=ConnectionFigures(
                total=self.connections,
                by_endpoint=dict(sorted(self._by_endpoint.items())),
                by_path=dict(sorted(self._by_path.items())),
            ),
            channels=dict(sorted(channels.items())),
            messages=MessageFigures(
                received=c.received,
                delivered=c.delivered,
                dropped=c.dropped,
                published_api=c.api_published,
                rate_limited=c.rate_limited,
            ),
            subscriptions=subscriptions,
            presence_members=presence_members,
            protocol_errors={str(code): n for code, n in sorted(c.protocol_errors.items())},
            slow_consumer_disconnects=c.slow_consumer_disconnects,
            gap_notices=self.gap_notices,
            connections_opened=c.connections_opened,
            handshake_timeouts=c.handshake_timeouts,
            drained=c.drained,
            rejected=dict(sorted(c.rejected.items())),
            closes={str(code): n for code, n in sorted(c.closes.items())},
            http_errors={str(status): n for status, n in sorted(c.http_errors.items())},
            write_latency=LatencyFigures(
                counts=list(self.write_latency.counts),
                sum_seconds=round(self.write_latency.sum, 6),
            ),
            worker=WorkerInfo(
                id=self.worker_id,
                pid=self.pid,
                host=self.host,
                connections=self.connections,
                uptime_seconds=uptime,
                gc=self.gc_monitor.snapshot(),
                draining=draining,
                tasks=_tasks_alive(),
            ),
        )

    async def _log_status(self) -> None:
        """One status line per interval when something changed, else every so often."""
        last: tuple[Any, ...] = ()
        quiet = 0
        while True:
            await asyncio.sleep(self._log_interval)
            c = self.counters
            status = (
                self.connections,
                tuple(sorted(self._by_endpoint.items())),
                c.received,
                c.delivered,
                c.slow_consumer_disconnects,
            )
            quiet += 1
            if status == last and quiet < QUIET_LOG_EVERY:
                continue
            last, quiet = status, 0
            logger.info(
                "connections: %d (%s) received=%d delivered=%d slow_consumers=%d",
                self.connections,
                ", ".join(f"{k}={v}" for k, v in sorted(self._by_endpoint.items()) if v) or "-",
                c.received,
                c.delivered,
                c.slow_consumer_disconnects,
            )


def label(conn: Connection) -> str:
    """A connection's endpoint and channel as log lines show them."""
    return conn.endpoint if conn.channel is None else f"{conn.endpoint}#{conn.channel}"


def _tasks_alive() -> int:
    """asyncio tasks not yet done in the running loop (0 outside one)."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return 0
