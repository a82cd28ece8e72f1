"""What the socket tests do as well-behaved clients: the still-serving check, receiving."""

from __future__ import annotations

import asyncio
import uuid
from typing import TypeGuard

import websockets
from websockets.typing import Data

from tests.support.servers import ServerProcess


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


async def receive_many(
    ws: websockets.ClientConnection, count: int, within: float = 30.0
) -> list[Data]:
    """The next ``count`` messages on ``ws``, each awaited at most ``within`` seconds."""
    return [await asyncio.wait_for(ws.recv(), within) for _ in range(count)]


def all_text(messages: list[Data]) -> TypeGuard[list[str]]:
    """Whether every message is a text message (use as ``assert all_text(messages)``)."""
    return all(isinstance(m, str) for m in messages)


def all_binary(messages: list[Data]) -> TypeGuard[list[bytes]]:
    """Whether every message is a binary message (use as ``assert all_binary(messages)``)."""
    return all(isinstance(m, bytes) for m in messages)
