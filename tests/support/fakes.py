"""Stand-ins for the server's side of a socket, for unit tests of the connection classes."""

from __future__ import annotations

import asyncio
from typing import Any

from app.server.direct import DirectWriter
from app.server.socket import ServerSocket
from app.services.asgi_connection import AsgiConnection
from app.services.connection import OutboxLimits
from app.services.counters import Counters
from app.services.direct_connection import Cork, DirectConnection
from app.services.latency import WriteLatency


class FakeSocket:
    """Records what a connection sends through ASGI; ``block`` makes sends wait like a full
    buffer."""

    def __init__(self) -> None:
        self.client = None
        self.scope: dict[str, Any] = {}
        self.sent: list[dict[str, Any]] = []
        self.block = asyncio.Event()
        self.block.set()

    async def send(self, message: dict[str, Any]) -> None:
        """Wait while blocked, then record ``message``."""
        await self.block.wait()
        self.sent.append(message)


class FakeDirect(DirectWriter):
    """Stands in for uvicorn's transport on the direct path."""

    def __init__(self) -> None:  # no protocol to wrap
        self.writes: list[bytes] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.open = True

    def can_write(self) -> bool:
        return self.open and self.writable.is_set()

    def is_open(self) -> bool:
        return self.open

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def wait_writable(self) -> None:
        await self.writable.wait()


class Overflows(list[int]):
    """The ``dropped`` figure of every slow-consumer report, in order."""

    def report(self, conn: object, dropped: int) -> None:
        """An ``on_overflow`` callback."""
        self.append(dropped)


def asgi_connection(
    sock: FakeSocket,
    counters: Counters,
    overflows: Overflows,
    *,
    max_messages: int = 4,
    max_bytes: int = 1000,
) -> AsgiConnection:
    """An AsgiConnection sending through ``sock``, with no transport to abort."""
    return AsgiConnection(
        conn_id=1,
        endpoint="broadcast",
        channel="default",
        peer="test",
        send=sock.send,
        socket=ServerSocket({}),
        limits=OutboxLimits(max_messages=max_messages, max_bytes=max_bytes, close_timeout=0.1),
        counters=counters,
        on_overflow=overflows.report,
    )


def direct_connection(
    direct: FakeDirect, counters: Counters, overflows: Overflows
) -> DirectConnection:
    """A DirectConnection writing to ``direct``, closing through a FakeSocket."""
    return DirectConnection(
        direct=direct,
        cork=Cork(WriteLatency()),
        conn_id=2,
        endpoint="broadcast",
        channel="default",
        peer="test",
        send=FakeSocket().send,
        socket=ServerSocket({}),
        limits=OutboxLimits(max_messages=4, max_bytes=10_000, close_timeout=0.1),
        counters=counters,
        on_overflow=overflows.report,
    )
