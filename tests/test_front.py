"""The connect path's front (app/server/front.py): a plain upgrade head read in Python,
anything else handed to uvicorn's HTTP protocol with the bytes read so far."""

from __future__ import annotations

import asyncio
import base64
import os

import httpx
import pytest
import websockets

from app.server.front import MAX_HEAD, plain_upgrade
from tests.support.servers import ServerProcess, StartServer

BROWSER = (
    b"GET /ws/broadcast?x=1 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8000\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"User-Agent:\tMozilla/5.0 (X11)  "
)


def test_a_browser_head_is_plain_with_its_headers_as_httptools_gives_them() -> None:
    found = plain_upgrade(BROWSER)
    assert found is not None
    target, headers = found
    assert target == b"/ws/broadcast?x=1"
    assert headers[1] == (b"connection", b"keep-alive, Upgrade")
    assert headers[-1] == (b"user-agent", b"Mozilla/5.0 (X11)")


@pytest.mark.parametrize(
    "change",
    [
        (b"GET /ws", b"POST /ws"),
        (b"HTTP/1.1\r\n", b"HTTP/1.0\r\n"),
        (b"GET /ws/broadcast?x=1", b"GET http://h/ws/broadcast"),
        (b"GET /ws/broadcast?x=1", b"GET /ws/br\xc3\xa9"),
        (b"GET /ws/broadcast?x=1 ", b"GET  /ws/broadcast?x=1 "),
        (b"Upgrade: websocket", b"Upgrade: h2c"),
        (b"keep-alive, Upgrade", b"keep-alive"),
        (b"Host: ", b"Ho st: "),
        (b"Host: 127.0.0.1:8000\r\n", b"Host: 127.0.0.1:8000\r\n folded\r\n"),
        (b"Host: 127.0.0.1:8000", b"Host: 127.0.0.1\x01"),
        (b"Host: 127.0.0.1:8000", b"Host: x\r\nContent-Length: 0"),
        (b"Host: 127.0.0.1:8000", b"Host: x\r\nTransfer-Encoding: chunked"),
        (b"Upgrade: websocket", b"Upgrade: websocket\r\nConnection: close"),  # the last counts
        (b"Upgrade: websocket\r\n", b""),
    ],
)
def test_anything_else_is_left_to_uvicorn(change: tuple[bytes, bytes]) -> None:
    old, new = change
    assert old in BROWSER
    assert plain_upgrade(BROWSER.replace(old, new, 1)) is None


def _request(server: ServerProcess, path: str, *extra: bytes) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
        ).encode()
        + b"".join(extra)
        + b"\r\n"
    )


async def _status_after(server: ServerProcess, *pieces: bytes) -> bytes:
    """The status line the server answers ``pieces`` with, sent one after another."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return head.split(b"\r\n", 1)[0]
    finally:
        writer.close()


async def test_a_head_in_pieces_is_read_whole_and_upgraded(start_server: StartServer) -> None:
    server = start_server()
    request = _request(server, "/ws/echo")
    pieces = [request[i : i + 7] for i in range(0, len(request), 7)]
    assert await _status_after(server, *pieces) == b"HTTP/1.1 101 Switching Protocols"


async def test_a_head_longer_than_the_front_reads_goes_to_uvicorn(
    start_server: StartServer,
) -> None:
    server = start_server()
    cookie = b"Cookie: c=" + b"x" * MAX_HEAD + b"\r\n"
    status = await _status_after(server, _request(server, "/ws/echo", cookie))
    assert status == b"HTTP/1.1 101 Switching Protocols"


async def test_plain_http_keeps_its_connection_through_the_front(
    start_server: StartServer,
) -> None:
    server = start_server()
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        first = await client.get("/healthz")
        second = await client.get("/healthz")  # the same kept-alive connection
        posted = await client.post("/api/publish", json={"channel": "c", "data": 1})
    assert first.status_code == second.status_code == 200
    assert posted.status_code in (401, 403)  # no key: uvicorn read the body and answered


async def test_the_same_sockets_behave_the_same_either_way(start_server: StartServer) -> None:
    server = start_server()
    async with websockets.connect(server.ws("/ws/echo")) as ws:
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 10) == "ping"
    status = await _status_after(server, _request(server, "/ws/nowhere"))
    assert status.startswith(b"HTTP/1.1 404 ")
