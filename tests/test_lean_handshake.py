"""The lean opening handshake (app/server/websocket.py) answers as uvicorn and websockets do.

A plain handshake gets its 101 written from bytes; anything else (a permessage-deflate
offer, a bad key, a wrong version) takes the library's way, with the library's answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys
from typing import Any

import pytest
import websockets
from uvicorn.config import Config
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from uvicorn.server import ServerState

from app.server.direct import DIRECT_ATTRIBUTES
from app.server.websocket import (
    FanoutWebSocketProtocol,
    _HeaderLines,
    accept_key,
    use_fanout_websocket_protocol,
)
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def plain_head(key: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"127.0.0.1:8000"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", key),
        (b"sec-websocket-version", b"13"),
    ]


def test_a_plain_valid_head_gets_the_rfc_accept_value() -> None:
    key = base64.b64encode(os.urandom(16))
    assert accept_key(plain_head(key)) == base64.b64encode(hashlib.sha1(key + GUID).digest())
    # Connection may list other tokens, in any case, over several headers.
    head = [*plain_head(key)[:2], (b"connection", b"keep-alive"), (b"connection", b" UPGRADE")]
    assert accept_key(head + plain_head(key)[3:]) is not None


@pytest.mark.parametrize(
    "change",
    [
        "key of 15 bytes",
        "key not base64",
        "version 8",
        "no upgrade token",
        "upgrade h2c",
        "two keys",
        "no key",
    ],
)
def test_anything_but_a_plain_valid_head_is_left_to_the_library(change: str) -> None:
    head = plain_head(base64.b64encode(os.urandom(16)))
    if change == "key of 15 bytes":
        head[3] = (b"sec-websocket-key", base64.b64encode(os.urandom(15)))
    elif change == "key not base64":
        head[3] = (b"sec-websocket-key", b"!" * 24)
    elif change == "version 8":
        head[4] = (b"sec-websocket-version", b"8")
    elif change == "no upgrade token":
        head[2] = (b"connection", b"keep-alive")
    elif change == "upgrade h2c":
        head[1] = (b"upgrade", b"h2c")
    elif change == "two keys":
        head.append(head[3])
    else:
        del head[3]
    assert accept_key(head) is None


async def exchange(server: ServerProcess, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


def request(server: ServerProcess, path: str, key: bytes, *extra: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_the_101_carries_the_accept_value_date_server_and_chosen_subprotocol(
    start_server: StartServer,
) -> None:
    server = start_server()
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
    head = (await exchange(server, request(server, "/ws/broadcast", key))).decode()
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    assert f"Sec-WebSocket-Accept: {accept}" in lines
    assert "Upgrade: websocket" in lines and "Connection: Upgrade" in lines
    assert any(line.startswith("date: ") for line in lines)
    assert "server: uvicorn" in lines
    assert "Sec-WebSocket-Protocol" not in head
    offer = "Sec-WebSocket-Protocol: other, fanout.v1"
    head = (await exchange(server, request(server, "/ws", key, offer))).decode()
    assert "Sec-WebSocket-Protocol: fanout.v1" in head.split("\r\n")


BROWSER_OFFERS = [
    "permessage-deflate; client_max_window_bits",  # Chrome, Firefox
    "permessage-deflate",
    "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover, permessage-deflate",
    "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=7",  # not acceptable: no extension
]


def _library_answer(offer: str) -> str | None:
    """The Sec-WebSocket-Extensions uvicorn's own protocol answers ``offer`` with: the
    library's ServerProtocol with the factory uvicorn 0.54's websockets-sansio protocol
    builds in its ``connection_made``."""
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    library = ServerProtocol(
        extensions=[
            ServerPerMessageDeflateFactory(
                server_max_window_bits=12,
                client_max_window_bits=12,
                compress_settings={"memLevel": 5},
            )
        ]
    )
    key = base64.b64encode(os.urandom(16)).decode()
    headers = websockets.datastructures.Headers(
        [
            ("Host", "x"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Extensions", offer),
        ]
    )
    response = library.accept(Request("/", headers))
    assert response.status_code == 101
    answer: str | None = response.headers.get("Sec-WebSocket-Extensions")
    return answer


@pytest.mark.parametrize("offer", BROWSER_OFFERS)
async def test_an_extension_offer_gets_the_answer_uvicorns_protocol_gives(
    start_server: StartServer, offer: str
) -> None:
    server = start_server()
    key = base64.b64encode(os.urandom(16))
    head = (
        await exchange(
            server, request(server, "/ws/broadcast", key, f"Sec-WebSocket-Extensions: {offer}")
        )
    ).decode()
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    expected = _library_answer(offer)
    answers = [
        line.split(": ", 1)[1] for line in lines if line.startswith("Sec-WebSocket-Extensions: ")
    ]
    assert answers == ([expected] if expected is not None else [])
    # Same place as the library's: right after the accept value.
    if expected is not None:
        accept_at = next(
            i for i, line in enumerate(lines) if line.startswith("Sec-WebSocket-Accept")
        )
        assert lines[accept_at + 1] == f"Sec-WebSocket-Extensions: {expected}"


async def test_a_deflate_offer_is_negotiated_and_compressed_frames_are_read(
    start_server: StartServer,
) -> None:
    server = start_server()
    async with websockets.connect(server.ws("/ws/broadcast"), compression="deflate") as ws:
        assert ws.response is not None
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert extensions.startswith("permessage-deflate")
        for size in (200, 70_000):  # the client compresses both; the server decompresses
            await ws.send("x" * size)
            assert await asyncio.wait_for(ws.recv(), 10) == "x" * size
    stats = await fetch_stats(server)
    assert stats["worker"]["tasks"] < 10  # it took the fast path: no task for the socket


async def test_a_malformed_extensions_header_gets_the_library_400(
    start_server: StartServer,
) -> None:
    server = start_server()
    key = base64.b64encode(os.urandom(16))
    answer = await exchange(
        server, request(server, "/ws/broadcast", key, "Sec-WebSocket-Extensions: ;;,=")
    )
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_invalid_handshakes_get_the_library_answers(start_server: StartServer) -> None:
    server = start_server()
    bad_key = await exchange(server, request(server, "/ws/broadcast", b"c2hvcnQ="))
    assert bad_key.startswith(b"HTTP/1.1 400 ")
    old = request(server, "/ws/broadcast", base64.b64encode(os.urandom(16)))
    wrong_version = await exchange(server, old.replace(b"Version: 13", b"Version: 8"))
    assert wrong_version.startswith(b"HTTP/1.1 400 ")


async def test_a_refused_plain_handshake_gets_its_http_status(start_server: StartServer) -> None:
    server = start_server({"FANOUT_MAX_CONNECTIONS": "1"})
    async with websockets.connect(server.ws("/ws/broadcast")):
        key = base64.b64encode(os.urandom(16))
        refused = await exchange(server, request(server, "/ws/broadcast", key))
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in refused.lower()


async def test_under_h11_the_protocol_parses_the_head_itself(start_server: StartServer) -> None:
    server = start_server(args=["--http", "h11"])
    async with websockets.connect(server.ws("/ws/broadcast")) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 10) == "hello"


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app for a Config that is never served."""


async def test_each_protocol_keeps_its_attributes_in_a_small_shared_key_dict() -> None:
    config = Config(app=_app, log_config=None)
    config.load()
    protocol_class = FanoutWebSocketProtocol.for_config(config)
    assert protocol_class.__name__ == "FanoutWebSocketProtocol"  # what the trims look for
    assert protocol_class.ping_interval == config.ws_ping_interval
    state = ServerState()
    protocols = [protocol_class(config=config, server_state=state, app_state={}) for _ in range(3)]
    # Past about 30 keys CPython 3.11 gives every instance a 1.4 KB dict of its own.
    assert len(vars(protocols[-1])) <= 28
    assert sys.getsizeof(vars(protocols[-1])) < 600
    # The direct path trusts the class to set what it uses instead of looking for each.
    assert protocol_class.has_direct_attributes
    assert all(hasattr(protocols[0], name) for name in DIRECT_ATTRIBUTES)


def test_only_uvicorns_default_protocol_is_replaced_and_anew_for_each_start() -> None:
    config = Config(app=_app, log_config=None)
    config.load()
    assert use_fanout_websocket_protocol(config)
    first = config.ws_protocol_class
    assert isinstance(first, type) and issubclass(first, FanoutWebSocketProtocol)
    assert use_fanout_websocket_protocol(config)  # a second start: fresh keepalive queues
    assert config.ws_protocol_class is not first
    other = Config(app=_app, log_config=None, ws="wsproto")
    other.load()
    assert not use_fanout_websocket_protocol(other)
    assert other.ws_protocol_class is WSProtocol


def test_the_101s_default_headers_follow_the_list_uvicorn_replaces() -> None:
    # uvicorn puts a new list (a new date) on its server state each second; the 101's
    # lines are made once per list, so they must change with it, not stay with the first.
    lines = _HeaderLines()
    first = [(b"date", b"Mon, 07 Dec 2026 23:59:59 GMT"), (b"Server", b"uvicorn")]
    expected = b"date: Mon, 07 Dec 2026 23:59:59 GMT\r\nserver: uvicorn\r\n"
    assert lines.of(first) == expected
    assert lines.of(first) == expected
    second = [(b"date", b"Tue, 08 Dec 2026 00:00:00 GMT")]
    assert lines.of(second) == b"date: Tue, 08 Dec 2026 00:00:00 GMT\r\n"
    assert lines.of([]) == b""
