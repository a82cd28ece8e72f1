"""A scripted fanout.v1 server for client tests: history with offsets and epochs,
recovery on ``sub`` with ``since``, and knobs to misbehave (duplicate pushes, closes with
a chosen code and reason, silence) that a real server would not do on demand.

It speaks just enough of the contract (PROTOCOL.md section 2) for the SDK's client:
``connect``, ``sub`` (with ``since``), ``unsub``, ``pub``, ``ping``, ``refresh``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol


@dataclass
class Channel:
    """One history channel: its epoch and every publication as ``(offset, data)``."""

    epoch: str = "e1"
    pubs: list[tuple[int, Any]] = field(default_factory=list)

    @property
    def top(self) -> int:
        """The newest offset (0: none yet)."""
        return self.pubs[-1][0] if self.pubs else 0


class FakeServer:
    """``async with FakeServer() as fake:`` listens on ``fake.url`` (``ws://127.0.0.1:P/ws``)."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.connections: list[ServerConnection] = []
        self.commands: list[dict[str, Any]] = []
        """Every command received, in order, across connections."""
        self.connects = 0
        self.duplicate_pushes = False
        """Push every publication twice (a faulty path the client must absorb)."""
        self.silent = False
        """Stop answering anything (a dead peer that keeps its socket open)."""
        self._subs: dict[ServerConnection, set[str]] = {}
        self._server: Server | None = None

    @property
    def url(self) -> str:
        """Where clients connect."""
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    async def __aenter__(self) -> FakeServer:
        self._server = await serve(
            self._serve, "127.0.0.1", 0, subprotocols=[Subprotocol("fanout.v1")], ping_interval=None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def channel(self, name: str) -> Channel:
        """The channel ``name``, made on first use."""
        return self.channels.setdefault(name, Channel())

    async def publish(self, name: str, data: Any) -> int:
        """Store a publication and push it to every subscriber; returns its offset."""
        channel = self.channel(name)
        offset = channel.top + 1
        channel.pubs.append((offset, data))
        frame = json.dumps({"ch": name, "o": offset, "d": data})
        for ws, subs in list(self._subs.items()):
            if name in subs:
                for _ in range(2 if self.duplicate_pushes else 1):
                    await ws.send(frame)
        return offset

    async def close_all(self, code: int = 1012, reason: str = "") -> None:
        """Close every open connection with ``code`` and ``reason``."""
        for ws in list(self._subs):
            await ws.close(code, reason)

    async def _serve(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        self._subs[ws] = set()
        try:
            async for frame in ws:
                command = json.loads(frame)
                self.commands.append(command)
                if self.silent:
                    continue
                await self._handle(ws, command)
        except Exception:  # the client went away
            pass
        finally:
            self._subs.pop(ws, None)

    async def _handle(self, ws: ServerConnection, command: dict[str, Any]) -> None:
        op, command_id = command.get("op"), command.get("id")
        res: dict[str, Any] = {}
        if op == "connect":
            self.connects += 1
            res = {"client": f"c{self.connects}", "user": ""}
        elif op == "sub":
            name = command["ch"]
            channel = self.channel(name)
            self._subs[ws].add(name)
            res = {"o": channel.top, "e": channel.epoch}
            since = command.get("since")
            if since is not None:
                recovered = since["e"] == channel.epoch
                after = since["o"] if recovered else channel.top
                res["recovered"] = recovered
                # Overlap by one on purpose: the client must drop what it already has.
                res["pubs"] = [{"o": o, "d": d} for o, d in channel.pubs if o >= after]
        elif op == "unsub":
            self._subs[ws].discard(command["ch"])
        elif op == "pub":
            offset = await self.publish(command["ch"], command.get("data"))
            res = {"o": offset, "e": self.channel(command["ch"]).epoch}
        elif op == "refresh":
            res = {"ttl": 3600}
        if command_id is not None:
            await ws.send(json.dumps({"id": command_id, "res": res}))
