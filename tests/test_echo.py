"""WS /ws/echo against a real server: text stays text, binary stays binary."""

from __future__ import annotations

import os

import websockets

from tests.support.servers import ServerProcess
from tests.support.stats import fetch_stats


async def test_text_and_binary_come_back_unchanged(server: ServerProcess) -> None:
    async with websockets.connect(server.ws("/ws/echo")) as ws:
        for text in ["hello", "", "héllo wörld ✓ 🚀", "x" * 70_000]:
            await ws.send(text)
            reply = await ws.recv()
            assert isinstance(reply, str)
            assert reply == text
        blob = os.urandom(200_000)
        await ws.send(blob)
        reply = await ws.recv()
        assert isinstance(reply, bytes)
        assert reply == blob


async def test_echo_is_private_and_counted(server: ServerProcess) -> None:
    before = await fetch_stats(server)
    async with (
        websockets.connect(server.ws("/ws/echo")) as a,
        websockets.connect(server.ws("/ws/echo")) as b,
    ):
        await a.send("only for a")
        assert await a.recv() == "only for a"
        await b.send("only for b")
        assert await b.recv() == "only for b"
        during = await fetch_stats(server)
        assert during["connections"]["by_endpoint"]["echo"] == 2
    after = await fetch_stats(server)
    assert after["messages"]["received"] - before["messages"]["received"] == 2
    assert after["messages"]["delivered"] - before["messages"]["delivered"] == 2
