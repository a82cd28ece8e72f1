"""A small fanout.v1 client for the tests: numbered commands, replies by id, pushes apart."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.typing import Data

from tests.support.servers import ServerProcess

SUBPROTOCOL = "fanout.v1"


class V1Client:
    """One fanout.v1 connection: :meth:`call` sends a command and returns its reply;
    everything else the server pushes is kept, in order, for :meth:`push`."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pushes: list[Data] = []

    async def call(self, op: str, within: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send ``op`` with a fresh id and return the whole reply (``res`` or ``error``)."""
        command_id = next(self._ids)
        await self.ws.send(json.dumps({"id": command_id, "op": op, **fields}))
        return await self.reply(command_id, within)

    async def reply(self, command_id: int, within: float = 10.0) -> dict[str, Any]:
        """The reply with ``command_id``; pushes that arrive first are kept for later."""
        async with asyncio.timeout(within):
            while True:
                frame = await self.ws.recv()
                if isinstance(frame, str):
                    body = json.loads(frame)
                    if isinstance(body, dict) and body.get("id") == command_id:
                        return body
                self._pushes.append(frame)

    async def push(self, within: float = 10.0) -> Data:
        """The next frame that is not a reply to a command of :meth:`call`."""
        if self._pushes:
            return self._pushes.pop(0)
        return await asyncio.wait_for(self.ws.recv(), within)

    async def push_json(self, within: float = 10.0) -> dict[str, Any]:
        """The next push, which must be a JSON text frame."""
        frame = await self.push(within)
        assert isinstance(frame, str), frame
        body: dict[str, Any] = json.loads(frame)
        return body

    async def subscribe(self, *channels: str) -> None:
        """Subscribe to each channel, asserting every reply is a success."""
        for channel in channels:
            reply = await self.call("sub", ch=channel)
            assert "res" in reply, reply


@asynccontextmanager
async def v1_client(server: ServerProcess, query: str = "") -> AsyncIterator[V1Client]:
    """A fanout.v1 connection to ``server``'s ``/ws`` (subprotocol offered in the header)."""
    async with websockets.connect(
        server.ws("/ws" + query), subprotocols=[websockets.Subprotocol(SUBPROTOCOL)]
    ) as ws:
        yield V1Client(ws)
