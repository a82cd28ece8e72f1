"""Cluster-wide figures for /stats: every worker shares its own over the backend.

Each worker publishes a heartbeat (its snapshot) on the backend's control channel every
FANOUT_HEARTBEAT_INTERVAL seconds and keeps the latest heartbeat of every other worker; one
not heard from for FANOUT_HEARTBEAT_EXPIRY seconds is forgotten, and a worker that stops
cleanly says goodbye so it is forgotten at once. /stats then answers the same on every
worker: this worker's live figures plus the others' as of their last heartbeat.

Each response is consistent in itself (every figure of a worker comes from one snapshot),
but two workers' answers can differ for up to one interval: each sees the others as of their
last heartbeat. Heartbeats are numbered, so one that arrives late (a link re-established
while the old one still drains, a publisher's retry) never replaces a newer one.

The same channel carries one order: ``drain``, sent by the worker that took
``POST /api/drain`` to the other workers of its server (same host, same uvicorn
supervisor: :func:`server_id`); workers of other servers that share the backend ignore it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec

from app.logging_setup import LOGGER_NAME
from app.services.backends.base import CONTROL_CHANNEL
from app.services.figures import WorkerFigures, add_up
from app.services.message import Message
from app.startup import uvicorn_supervisor

logger = logging.getLogger(LOGGER_NAME)

MAX_PEERS = 4096
"""More workers than this in one cluster is a misconfiguration (or noise): ignore the rest."""


class ClusterView:
    """This worker's heartbeat task and the latest heartbeat of every other worker."""

    def __init__(
        self,
        *,
        worker_id: str,
        interval: float,
        expiry: float,
        publish: Callable[[str, Message], None],
        snapshot: Callable[[], WorkerFigures],
        on_drain: Callable[[str], None] | None = None,
        server: str | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.server = server if server is not None else server_id()
        """The server (uvicorn supervisor, or single process) this worker belongs to."""
        self._on_drain = on_drain
        self.interval = interval
        self.expiry = expiry
        self._publish = publish
        self._snapshot = snapshot
        self._peers: dict[str, tuple[float, WorkerFigures]] = {}
        """Other workers' snapshots by worker id, with the monotonic time they arrived."""
        self._order: dict[str, tuple[str, int]] = {}
        """Other workers' (boot, seq) of the heartbeat kept in ``_peers``."""
        self._boot = os.urandom(6).hex()
        """This process's heartbeats' ``boot``: a restarted worker reusing a pid (hence an id)
        starts its numbering afresh, and is not taken for an old, late one."""
        self._seq = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Announce this worker now and every ``interval`` seconds."""
        self._send_heartbeat()
        self._task = asyncio.create_task(self._beat(), name="fanout-heartbeat")

    async def stop(self) -> None:
        """Stop the heartbeat and tell the others to forget this worker."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._send({"type": "bye", "id": self.worker_id})

    def send_drain(self) -> None:
        """Tell the other workers of this server to drain."""
        self._send({"type": "drain", "id": self.worker_id, "server": self.server})

    def receive(self, message: Message) -> None:
        """Take a control message from another worker."""
        try:
            body = json.loads(message.data)
            kind = body["type"]
            worker_id = body["id"]
            if not isinstance(worker_id, str) or worker_id == self.worker_id:
                return
            if kind == "heartbeat":
                stats = msgspec.convert(body["stats"], WorkerFigures)
                order = _order(body)
                known = worker_id in self._peers
                if known and order is not None:
                    kept = self._order.get(worker_id)
                    if kept is not None and kept[0] == order[0] and kept[1] >= order[1]:
                        return  # late: a newer heartbeat of this worker is already here
                if known or len(self._peers) < MAX_PEERS:
                    self._peers[worker_id] = (time.monotonic(), stats)
                    if order is None:
                        self._order.pop(worker_id, None)
                    else:
                        self._order[worker_id] = order
                if not known:
                    # A newcomer (or one back after expiry): answer at once, so it counts this
                    # worker now rather than at this worker's next beat.
                    self._send_heartbeat()
            elif kind == "bye":
                self._peers.pop(worker_id, None)
                self._order.pop(worker_id, None)
            elif kind == "drain" and body["server"] == self.server and self._on_drain:
                self._on_drain(worker_id)
        except (ValueError, KeyError, TypeError, msgspec.ValidationError) as exc:
            logger.warning("ignoring a malformed control message: %s", exc)

    def peers(self) -> list[tuple[float, WorkerFigures]]:
        """Other workers' (heartbeat age in seconds, snapshot), expired entries dropped."""
        now = time.monotonic()
        expired = [wid for wid, (at, _) in self._peers.items() if now - at > self.expiry]
        for wid in expired:
            del self._peers[wid]
            self._order.pop(wid, None)
        return [(now - at, stats) for at, stats in self._peers.values()]

    def everyone(self, own: WorkerFigures) -> list[tuple[float, WorkerFigures]]:
        """Every live worker's (heartbeat age in seconds, figures): ``own`` first, at age 0."""
        return [(0.0, own), *self.peers()]

    def merged(self, own: WorkerFigures) -> dict[str, Any]:
        """/stats: ``own`` (this worker's live figures) added up with every live peer's."""
        peers = self.peers()
        result: dict[str, Any] = msgspec.to_builtins(add_up([own, *(f for _, f in peers)]))
        workers = [_worker_entry(own, 0.0)]
        workers += [_worker_entry(figures, age) for age, figures in peers]
        workers.sort(key=lambda w: (str(w["host"]), int(w["pid"])))
        result["workers"] = workers
        result["cluster"] = {
            "workers": len(workers),
            "hosts": len({w["host"] for w in workers}),
            "heartbeat_interval_seconds": self.interval,
            "expiry_seconds": self.expiry,
        }
        return result

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._send_heartbeat()

    def _send_heartbeat(self) -> None:
        self._send(
            {
                "type": "heartbeat",
                "id": self.worker_id,
                "boot": self._boot,
                "seq": next(self._seq),
                "stats": msgspec.to_builtins(self._snapshot()),
            }
        )

    def _send(self, body: dict[str, Any]) -> None:
        self._publish(CONTROL_CHANNEL, Message.from_text(json.dumps(body, separators=(",", ":"))))


def _order(body: dict[str, Any]) -> tuple[str, int] | None:
    """A heartbeat's (boot, seq); None from a worker that does not number them."""
    boot, seq = body.get("boot"), body.get("seq")
    if isinstance(boot, str) and isinstance(seq, int) and not isinstance(seq, bool):
        return boot, seq
    return None


def _worker_entry(figures: WorkerFigures, age: float) -> dict[str, Any]:
    worker: dict[str, Any] = msgspec.to_builtins(figures.worker)
    worker["backend"] = figures.backend
    worker["messages"] = msgspec.to_builtins(figures.messages)
    worker["slow_consumer_disconnects"] = figures.slow_consumer_disconnects
    worker["presence_members"] = figures.presence_members
    worker["drained"] = figures.drained
    worker["heartbeat_age_seconds"] = round(age, 3)
    return worker


def server_id() -> str:
    """The server this process is a worker of: ``host:pid:started`` of its uvicorn --workers
    supervisor, or of itself when it runs alone.

    ``started`` (the process's start time in clock ticks since boot, from /proc; empty
    elsewhere) tells apart two servers whose supervisors have the same pid on hosts of the
    same name (pid 1 in two containers).
    """
    supervisor = uvicorn_supervisor()
    pid = supervisor.pid if supervisor is not None and supervisor.pid else os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # The fields after the command (which may hold spaces), from "state" on: start
            # time is field 22, the 20th after the closing parenthesis.
            return stat.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""
