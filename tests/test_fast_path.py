"""Prepared frames: byte-identical to the plain path, used where safe, and reported."""

from __future__ import annotations

import os

import pytest
import websockets
from websockets.frames import Frame, Opcode

from app.services.message import Message
from tests.support.rawws import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawClient
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import channel_has, fetch_stats
from tests.support.waiting import eventually

SIZES = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]


@pytest.mark.parametrize("size", SIZES)
def test_prepared_frame_matches_the_websockets_serializer(size: int) -> None:
    text = "é" * (size // 2) + "a" * (size % 2)
    binary = os.urandom(size)
    for message, opcode in (
        (Message.from_text(text), Opcode.TEXT),
        (Message.from_bytes(binary), Opcode.BINARY),
    ):
        expected = Frame(opcode, message.data).serialize(mask=False)
        assert message.frame == expected
        assert message.frame is message.frame  # built once, then shared


async def _frames_from(server: ServerProcess) -> list[bytes]:
    """Raw bytes of the frames a broadcast of each SIZES message produces on ``server``."""
    receiver = await RawClient.open(server.port, "/ws/broadcast/conformance")
    sender = await RawClient.open(server.port, "/ws/broadcast/conformance")
    raws = []
    for size in SIZES:
        await sender.send(OP_TEXT, b"t" * size)
        await sender.send(OP_BINARY, bytes(range(256)) * (size // 256) + b"\xff" * (size % 256))
        for _ in range(2):
            raws.append((await receiver.recv_frame()).raw)
    await sender.close()
    await receiver.close()
    return raws


async def test_direct_frames_are_byte_identical_to_the_asgi_path(start_server: StartServer) -> None:
    direct = start_server()
    fallback = start_server(args=["--ws", "wsproto"])
    direct_frames = await _frames_from(direct)
    fallback_frames = await _frames_from(fallback)
    assert len(direct_frames) == 2 * len(SIZES)
    assert direct_frames == fallback_frames
    assert (await fetch_stats(direct))["connections_opened"] == 2


async def test_direct_writes_can_be_turned_off(start_server: StartServer) -> None:
    server = start_server({"FANOUT_DIRECT_WRITES": "false"})
    async with websockets.connect(server.ws("/ws/broadcast")) as ws:
        await ws.send("through ASGI")
        assert await ws.recv() == "through ASGI"
        stats = await fetch_stats(server)
        assert stats["connections"]["by_path"] == {"asgi": 1, "direct": 0}


async def test_stats_report_the_write_path(server: ServerProcess) -> None:
    async with websockets.connect(server.ws("/ws/broadcast")) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
        stats = await fetch_stats(server)
        by_path = stats["connections"]["by_path"]
        assert by_path[server.write_path] >= 1
        other = "asgi" if server.write_path == "direct" else "direct"
        assert by_path[other] == 0
        assert f"path={server.write_path}" in server.log()


async def test_deflate_clients_get_correct_frames(server: ServerProcess) -> None:
    """A client that negotiated permessage-deflate decodes every fast-path frame."""
    async with (
        websockets.connect(server.ws("/ws/broadcast/deflate"), compression="deflate") as a,
        websockets.connect(server.ws("/ws/broadcast/deflate"), compression=None) as b,
    ):
        assert a.protocol.extensions, "the server negotiated permessage-deflate"
        assert not b.protocol.extensions
        assert await eventually(lambda: channel_has(server, "deflate", 2))
        payloads: list[str | bytes] = ["x" * 1000, "héllo", os.urandom(5000), "z" * 100_000]
        for sender in (a, b):
            for payload in payloads:
                await sender.send(payload)
            for ws in (a, b):
                for payload in payloads:
                    assert await ws.recv() == payload


async def test_control_frames_work_beside_prepared_frames(server: ServerProcess) -> None:
    """A ping between broadcasts gets its pong; data frames around it arrive whole."""
    client = await RawClient.open(server.port, "/ws/broadcast/control")
    sender = await RawClient.open(server.port, "/ws/broadcast/control")
    assert await eventually(lambda: channel_has(server, "control", 2))
    await sender.send(OP_TEXT, b"before")
    await client.send(OP_PING, b"are you there")
    await sender.send(OP_TEXT, b"after")
    frames = [await client.recv_frame() for _ in range(3)]
    assert sorted((f.opcode, f.payload) for f in frames) == sorted(
        [(OP_TEXT, b"before"), (OP_PONG, b"are you there"), (OP_TEXT, b"after")]
    )
    texts = [f.payload for f in frames if f.opcode == OP_TEXT]
    assert texts == [b"before", b"after"]
    await client.send(OP_CLOSE, (1000).to_bytes(2, "big"))
    _, close = await client.recv_until_close()
    assert close is not None and close.close_code == 1000
    await sender.close()
