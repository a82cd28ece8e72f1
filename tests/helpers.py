"""Helpers shared by the socket tests: still-serving check, /stats predicates, receiving."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import websockets

from tests.conftest import ServerProcess, fetch_stats


async def assert_still_serving(server: ServerProcess) -> None:
    """A fresh client still gets its echo and its broadcast back."""
    token = uuid.uuid4().hex
    async with websockets.connect(server.ws("/ws/echo"), open_timeout=5) as ws:
        await ws.send(token)
        assert await ws.recv() == token
    async with (
        websockets.connect(server.ws("/ws/broadcast"), open_timeout=5) as a,
        websockets.connect(server.ws("/ws/broadcast"), open_timeout=5) as b,
    ):
        # The server registers a client before it completes the handshake, so both are in.
        await a.send(token)
        assert await a.recv() == token
        assert await b.recv() == token


async def total_is(server: ServerProcess, expected: int) -> bool:
    """Whether /stats counts exactly ``expected`` open connections."""
    return bool((await fetch_stats(server))["connections"]["total"] == expected)


async def channel_has(server: ServerProcess, channel: str, expected: int) -> bool:
    """Whether /stats counts exactly ``expected`` subscribers on ``channel``."""
    return bool((await fetch_stats(server))["channels"].get(channel, 0) == expected)


async def receive_many(
    ws: websockets.ClientConnection, count: int, within: float = 30.0
) -> list[Any]:
    """The next ``count`` messages on ``ws``, each awaited at most ``within`` seconds."""
    return [await asyncio.wait_for(ws.recv(), within) for _ in range(count)]
