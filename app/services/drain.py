"""Drain: close a worker's sockets with 1012 a few at a time, so clients come back spread out.

A drain starts on SIGTERM (under uvicorn, before uvicorn's own shutdown: see
:mod:`app.server.signals`), on ``POST /api/drain``, or when a sibling worker of the same
server was told to drain. From that moment the worker is *draining* for good: ``/healthz``
answers 503 so a load balancer stops sending, new handshakes are refused with 503 and
``Retry-After``, and the sockets open at the start are closed with 1012 and a reason
``{"reconnect_after_ms":N}`` in batches spread evenly over the drain window. Each close is
bounded by FANOUT_CLOSE_TIMEOUT, as every close is. Only a restart ends the draining state.

``N`` is a floor plus a uniform share of the window, different for every client: clients
closed in the same batch do not reconnect together, and none reconnects at once (to this
instance, still in its load balancer's pool until the health check notices).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable

from app.logging_setup import LOGGER_NAME
from app.services.close_codes import CloseCode
from app.services.connection import CONNECTING, Connection

logger = logging.getLogger(LOGGER_NAME)

TICK = 0.05
"""Shortest pause between two batches, in seconds."""
MIN_BATCH = 10
"""Fewest sockets closed per batch: a handful of clients is closed at once, not one every
few seconds (spreading them buys nothing and would only slow every restart down)."""
RECONNECT_FLOOR = 1.0
"""Seconds every reconnect hint waits at least."""
SETTLE_GRACE = 1.0
"""Seconds past FANOUT_CLOSE_TIMEOUT a drain waits for its last sockets to end."""


def schedule(count: int, seconds: float) -> list[tuple[float, int]]:
    """The batches closing ``count`` sockets over ``seconds``: (offset in seconds, size).

    Evenly spaced, the first at 0 and the last one interval before the window ends; at most
    one batch per :data:`TICK` and at least :data:`MIN_BATCH` sockets in every batch, sizes
    differing by one at most. ``seconds`` 0 (or a few sockets) is one batch at 0.
    """
    if count <= 0:
        return []
    batches = max(1, min(count // MIN_BATCH, int(seconds / TICK + 1e-9)))
    base, extra = divmod(count, batches)
    interval = seconds / batches
    return [(k * interval, base + (1 if k < extra else 0)) for k in range(batches)]


def reconnect_after(seconds: float, rng: random.Random | None = None) -> float:
    """A jittered reconnect delay in seconds: the floor plus a uniform share of the window."""
    uniform = (rng or random).uniform
    return RECONNECT_FLOOR + uniform(0.0, max(seconds, RECONNECT_FLOOR))


def close_reason(delay: float) -> str:
    """The 1012 close reason carrying the reconnect hint (PROTOCOL.md 6)."""
    return json.dumps({"reconnect_after_ms": round(delay * 1000)}, separators=(",", ":"))


class Drain:
    """One worker's drain: whether it is draining, and the task that closes its sockets.

    ``connections`` lists the worker's registered connections; ``on_close`` is told of every
    socket the drain closes (the counter behind ``drained`` in /stats and /metrics).
    """

    def __init__(
        self,
        *,
        seconds: float,
        close_timeout: float,
        connections: Callable[[], list[Connection]],
        on_close: Callable[[], None],
    ) -> None:
        self.seconds = seconds
        self._close_timeout = close_timeout
        self._connections = connections
        self._on_close = on_close
        self.draining = False
        self.window = seconds
        """The window of the drain under way (a SIGTERM's may be shorter: see main.py)."""
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    def start(self, why: str, seconds: float | None = None) -> bool:
        """Begin draining (over ``seconds``, default FANOUT_DRAIN_SECONDS); False if a drain
        had already begun, which then goes on as it was."""
        if self.draining:
            return False
        self.draining = True
        self.window = self.seconds if seconds is None else seconds
        self._task = asyncio.create_task(self._run(why, self.window), name="fanout-drain")
        return True

    async def wait(self) -> None:
        """Until the drain under way has closed its sockets (and they have ended)."""
        await self._done.wait()

    def retry_after(self) -> int:
        """Retry-After seconds for a handshake refused while draining (jittered, >= 1)."""
        return max(1, round(reconnect_after(self.window)))

    async def stop(self) -> None:
        """Cancel a drain still under way (the server is stopping anyway)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._done.set()

    async def _run(self, why: str, seconds: float) -> None:
        try:
            await self._close_paced(why, seconds)
        finally:
            self._done.set()

    async def _close_paced(self, why: str, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        started = time.monotonic()
        targets = self._connections()
        logger.info(
            "draining (%s): closing %d connection(s) with %d over %g s",
            why,
            len(targets),
            CloseCode.SERVICE_RESTART,
            seconds,
        )
        closed = 0
        position = 0
        for offset, size in schedule(len(targets), seconds):
            delay = began + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for conn in targets[position : position + size]:
                if conn.state is not CONNECTING:  # mid-handshake: closed in the sweep below
                    closed += self._close(conn, seconds)
            position += size
        # The sweep: sockets that were mid-handshake, and any that slipped in meanwhile.
        for conn in self._connections():
            closed += self._close(conn, seconds)
        # Sessions end in their own tasks, which leave nothing here to await: poll, for at
        # most FANOUT_CLOSE_TIMEOUT (after which every closing socket has been aborted).
        deadline = loop.time() + self._close_timeout + SETTLE_GRACE
        while self._connections() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(TICK)
        logger.info(
            "drained (%s): %d connection(s) closed in %.1f s, %d left",
            why,
            closed,
            time.monotonic() - started,
            len(self._connections()),
        )

    def _close(self, conn: Connection, seconds: float) -> int:
        if conn.closing:
            return 0  # it left on its own meanwhile, or is already closing
        conn.close(CloseCode.SERVICE_RESTART, close_reason(reconnect_after(seconds)))
        self._on_close()
        return 1
