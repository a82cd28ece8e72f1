"""Bad input gets a defined answer, a counter and a log line; everyone else is served on."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tests.support.clients import assert_still_serving
from tests.support.rawws import OP_BINARY, OP_TEXT, RawClient
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats

LIMIT = 65_536


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """This module's own server, with a small message limit, instead of conftest's."""
    proc = ServerProcess({"FANOUT_MAX_MESSAGE_BYTES": str(LIMIT)}).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("payload", ["x" * (LIMIT + 1), b"\x01" * (LIMIT + 1)])
async def test_oversized_message_closes_1009(server: ServerProcess, payload: str | bytes) -> None:
    before = await fetch_stats(server)
    async with websockets.connect(server.ws("/ws/broadcast")) as bystander:
        async with websockets.connect(server.ws("/ws/broadcast"), max_size=None) as ws:
            await ws.send(payload)
            with pytest.raises(ConnectionClosedError):
                await ws.recv()
            assert ws.close_code == 1009
        # The bystander never saw the oversized message and keeps getting traffic.
        await bystander.send("after")
        assert await bystander.recv() == "after"
    after = await fetch_stats(server)
    assert after["closes"].get("1009", 0) - before["closes"].get("1009", 0) == 1
    assert after["messages"]["received"] - before["messages"]["received"] == 1
    assert "code=1009" in server.log()
    await assert_still_serving(server)


async def test_message_at_the_limit_is_accepted(server: ServerProcess) -> None:
    async with websockets.connect(server.ws("/ws/echo")) as ws:
        await ws.send("é" * (LIMIT // 2))  # exactly LIMIT bytes of UTF-8
        assert await ws.recv() == "é" * (LIMIT // 2)


async def test_frame_header_beyond_protocol_limit_closes_1009(server: ServerProcess) -> None:
    before = await fetch_stats(server)
    client = await RawClient.open(server.port, "/ws/echo")
    assert client.status == 101
    # Announce a 1 TiB frame: the protocol layer refuses it from the header alone.
    header = bytes([0x80 | OP_BINARY, 0x80 | 127]) + struct.pack("!Q", 1 << 40) + b"mask"
    client.writer.write(header)
    _, close = await client.recv_until_close()
    assert close is not None and close.close_code == 1009
    await client.close()
    after = await fetch_stats(server)
    assert after["closes"].get("1009", 0) - before["closes"].get("1009", 0) == 1
    await assert_still_serving(server)


async def test_invalid_utf8_closes_1007(server: ServerProcess) -> None:
    before = await fetch_stats(server)
    async with websockets.connect(server.ws("/ws/broadcast")) as bystander:
        client = await RawClient.open(server.port, "/ws/broadcast")
        assert client.status == 101
        await client.send(OP_TEXT, b"valid start \xc3\x28 invalid")
        frames, close = await client.recv_until_close()
        assert close is not None and close.close_code == 1007
        assert frames == []  # nothing of it was broadcast, not even back to the sender
        await client.close()
        await bystander.send("still here")
        assert await bystander.recv() == "still here"
    after = await fetch_stats(server)
    assert after["closes"].get("1007", 0) - before["closes"].get("1007", 0) == 1
    assert after["messages"]["received"] - before["messages"]["received"] == 1
    assert "code=1007" in server.log()
    assert "Traceback" not in server.log()  # one warning line, not a traceback
    await assert_still_serving(server)


async def test_unmasked_frame_closes_1002(server: ServerProcess) -> None:
    before = await fetch_stats(server)
    client = await RawClient.open(server.port, "/ws/echo")
    client.writer.write(bytes([0x80 | OP_TEXT, 5]) + b"hello")  # clients must mask
    _, close = await client.recv_until_close()
    assert close is not None and close.close_code == 1002
    await client.close()
    after = await fetch_stats(server)
    assert after["closes"].get("1002", 0) - before["closes"].get("1002", 0) == 1
    await assert_still_serving(server)


@pytest.mark.parametrize("path", ["/ws/echo", "/ws/broadcast", "/ws/broadcast/room"])
async def test_plain_get_on_socket_path_is_426(server: ServerProcess, path: str) -> None:
    before = await fetch_stats(server)
    async with httpx.AsyncClient() as http:
        response = await http.get(server.base + path)
    assert response.status_code == 426
    assert response.headers["upgrade"].lower() == "websocket"
    assert response.json()["error"] == "upgrade_required"
    after = await fetch_stats(server)
    assert after["http_errors"].get("426", 0) - before["http_errors"].get("426", 0) == 1
    await assert_still_serving(server)


async def test_plain_get_on_a_bad_channel_name_is_400_like_its_handshake(
    server: ServerProcess,
) -> None:
    before = await fetch_stats(server)
    async with httpx.AsyncClient() as http:
        response = await http.get(server.base + "/ws/broadcast/bad%20name")
    assert response.status_code == 400
    assert response.json()["error"] == "bad_channel"
    after = await fetch_stats(server)
    assert after["http_errors"].get("400", 0) - before["http_errors"].get("400", 0) == 1


@pytest.mark.parametrize("path", ["/ws/echo/", "/ws/broadcast/", "/ws/broadcast/room/"])
async def test_one_trailing_slash_on_a_socket_path_is_forgiven(
    server: ServerProcess, path: str
) -> None:
    async with websockets.connect(server.ws(path)) as ws:
        await ws.send("slash")
        assert await ws.recv() == "slash"
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(server.ws(path + "/")):
            pass
    assert info.value.response.status_code == 404


async def test_wrong_websocket_version_is_4xx(server: ServerProcess) -> None:
    client = await RawClient.open(server.port, "/ws/broadcast", version="8")
    # Answered inside uvicorn's protocol layer, before the app is called.
    assert client.status == 400, client.status_line
    body = await client.reader.read(1000)
    assert b"Sec-WebSocket-Version" in body
    await client.close()
    assert "connection rejected (400 Bad Request)" in server.log()
    await assert_still_serving(server)


async def test_unknown_http_path_is_404(server: ServerProcess) -> None:
    before = await fetch_stats(server)
    async with httpx.AsyncClient() as http:
        response = await http.get(server.base + "/no/such/page")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}
    after = await fetch_stats(server)
    assert after["http_errors"].get("404", 0) - before["http_errors"].get("404", 0) == 1


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [("/ws/nowhere", 404, "unknown_path"), ("/ws/broadcast/bad%20name", 400, "bad_channel")],
)
async def test_refused_socket_paths(
    server: ServerProcess, path: str, status: int, reason: str
) -> None:
    before = await fetch_stats(server)
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(server.ws(path)):
            pass
    assert info.value.response.status_code == status
    after = await fetch_stats(server)
    assert after["rejected"].get(reason, 0) - before["rejected"].get(reason, 0) == 1
    assert f"rejected {path.replace('%20', ' ')}" in server.log()
    assert "ERROR" not in server.log()
    await assert_still_serving(server)


async def test_connection_limit_refuses_with_503(start_server: StartServer) -> None:
    server = start_server({"FANOUT_MAX_CONNECTIONS": "2"})
    a = await websockets.connect(server.ws("/ws/broadcast"))
    b = await websockets.connect(server.ws("/ws/echo"))
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(server.ws("/ws/broadcast")):
            pass
    assert info.value.response.status_code == 503
    assert info.value.response.headers["Retry-After"] == "1"
    stats = await fetch_stats(server)
    assert stats["rejected"] == {"capacity": 1}
    assert stats["connections"]["total"] == 2
    # The two admitted clients are unaffected.
    await a.send("fine")
    assert await a.recv() == "fine"
    await b.close()
    await a.close()
    await assert_still_serving(server)
    assert "ERROR" not in server.log()
