"""A connection that never completes its request head (slowloris) is closed, counted, logged.

uvicorn on its own arms no timer before it has answered a request; Fanout's protocols
(app/server/http.py, put in place by the app itself at start-up) close such a connection
after FANOUT_HANDSHAKE_TIMEOUT, under the plain ``uvicorn app.main:app`` command, with the
default httptools protocol and with ``--http h11``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest
import websockets

from app.server.http import DEADLINE_KEY, _HeadTimer, handshake_deadline
from tests.support.clients import assert_still_serving
from tests.support.rawws import handshake_request
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats
from tests.support.waiting import eventually

TIMEOUT = 1.0
SETTINGS = {"FANOUT_HANDSHAKE_TIMEOUT": str(TIMEOUT)}
HTTP_PROTOCOLS = {"httptools": [], "h11": ["--http", "h11"]}
ENDS_WITHIN = 15.0
"""Generous bound for a close that is due TIMEOUT seconds after the connection."""


class Slow:
    """A raw TCP client that sends its request head slowly, or never."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Slow:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def trickle(self, data: bytes, every: float = 0.2) -> None:
        """Send ``data`` one byte at a time until it is all sent or the socket fails."""
        with contextlib.suppress(ConnectionError, OSError):
            for i in range(len(data)):
                self.writer.write(data[i : i + 1])
                await self.writer.drain()
                await asyncio.sleep(every)

    async def seconds_until_closed(self, within: float = ENDS_WITHIN) -> float:
        """Seconds until the server ends the connection (EOF or reset); fails if it never does."""
        start = time.monotonic()
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(1 << 16):
                    pass
        except ConnectionError:
            pass
        return time.monotonic() - start

    def close(self) -> None:
        self.writer.close()


async def handshake_timeouts(server: ServerProcess) -> int:
    return int((await fetch_stats(server))["handshake_timeouts"])


@pytest.mark.parametrize("http", list(HTTP_PROTOCOLS))
async def test_silent_and_trickling_connections_are_closed_after_the_handshake_timeout(
    start_server: StartServer, http: str
) -> None:
    server = start_server(SETTINGS, HTTP_PROTOCOLS[http])
    silent = await Slow.open(server.port)
    trickling = await Slow.open(server.port)
    # Far longer than the timeout at one byte per 0.2 s: each byte must not restart the clock.
    request = handshake_request("127.0.0.1", server.port, "/ws/broadcast")
    sender = asyncio.create_task(trickling.trickle(request))

    silent_for, trickled_for = await asyncio.gather(
        silent.seconds_until_closed(), trickling.seconds_until_closed()
    )
    assert not sender.done(), "the trickling client ran out of bytes before it was closed"
    sender.cancel()
    for seconds in (silent_for, trickled_for):
        assert TIMEOUT * 0.8 <= seconds < ENDS_WITHIN

    assert await eventually(lambda: _count_is(server, 2))
    lines = [
        line for line in server.log().splitlines() if "handshake timeout from 127.0.0.1:" in line
    ]
    assert len(lines) == 2
    assert f"no complete request within {TIMEOUT:g} s" in lines[0]
    await assert_still_serving(server)
    silent.close()
    trickling.close()


@pytest.mark.parametrize("http", list(HTTP_PROTOCOLS))
async def test_a_kept_alive_connection_that_trickles_its_next_request_is_closed(
    start_server: StartServer, http: str
) -> None:
    server = start_server(SETTINGS, HTTP_PROTOCOLS[http])
    client = await Slow.open(server.port)
    client.writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    # uvicorn's own keep-alive timer is cancelled by every byte; this one is not.
    sender = asyncio.create_task(client.trickle(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert await client.seconds_until_closed() < ENDS_WITHIN
    assert not sender.done()
    sender.cancel()
    assert await eventually(lambda: _count_is(server, 1))
    await assert_still_serving(server)
    client.close()


@pytest.mark.parametrize("http", list(HTTP_PROTOCOLS))
async def test_a_handshake_that_completes_in_time_is_never_cut_off(
    start_server: StartServer, http: str
) -> None:
    server = start_server(SETTINGS, HTTP_PROTOCOLS[http])
    # A WebSocket that stays idle for several timeouts after its handshake stays open.
    async with websockets.connect(server.ws("/ws/echo")) as ws:
        await asyncio.sleep(TIMEOUT * 3)
        await ws.send("still here")
        assert await ws.recv() == "still here"
    # So does a kept-alive HTTP connection between requests within the timeout.
    async with httpx.AsyncClient(base_url=server.base) as http_client:
        for _ in range(3):
            assert (await http_client.get("/healthz")).status_code == 200
            await asyncio.sleep(TIMEOUT / 4)
    assert await handshake_timeouts(server) == 0
    assert "handshake timeout" not in server.log()


async def test_handshake_timeouts_are_counted_across_workers(start_server: StartServer) -> None:
    server = start_server({**SETTINGS, "FANOUT_HEARTBEAT_INTERVAL": "0.25"}, ["--workers", "2"])
    clients = [await Slow.open(server.port) for _ in range(6)]
    for seconds in await asyncio.gather(*(c.seconds_until_closed() for c in clients)):
        assert seconds < ENDS_WITHIN
    assert await eventually(lambda: _count_is(server, 6))
    assert server.log().count("handshake timeout from") == 6
    await assert_still_serving(server)
    for client in clients:
        client.close()


async def test_hypercorn_closes_an_incomplete_request_after_its_own_keep_alive_timeout() -> None:
    """Fanout's deadline is uvicorn's; hypercorn's ``--keep-alive`` (5 s by default) covers it."""
    server = ServerProcess(SETTINGS, ["--keep-alive", "1"], program="hypercorn").start()
    try:
        silent = await Slow.open(server.port)
        trickling = await Slow.open(server.port)
        request = handshake_request("127.0.0.1", server.port, "/ws/broadcast")
        sender = asyncio.create_task(trickling.trickle(request))
        for client in (silent, trickling):
            assert await client.seconds_until_closed() < ENDS_WITHIN
            client.close()
        assert not sender.done()
        sender.cancel()
        assert await handshake_timeouts(server) == 0  # hypercorn's, not counted by Fanout
        await assert_still_serving(server)
    finally:
        server.stop()


async def _count_is(server: ServerProcess, expected: int) -> bool:
    return await handshake_timeouts(server) == expected


class _Transport:
    """What the head deadline uses of a transport."""

    def __init__(self) -> None:
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


class _Timed(_HeadTimer):
    """A protocol with nothing but the head deadline."""

    def __init__(self, app_state: dict[str, Any], port: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.app_state = app_state
        self.client = ("127.0.0.1", port)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        super().connection_made(transport)


async def test_a_handed_over_connection_keeps_the_deadline_it_had() -> None:
    # The front hands a connection that is not a plain upgrade to uvicorn's protocol: the
    # deadline goes with it, due when it was, not restarted (a trickled head would get
    # another full timeout at each hand-over otherwise).
    expired: list[str] = []
    deadline = handshake_deadline(0.2, lambda peer, _timeout: expired.append(peer))
    app_state: dict[str, Any] = {DEADLINE_KEY: deadline}
    front, http = _Timed(app_state, 1), _Timed(app_state, 2)
    front_transport, http_transport = _Transport(), _Transport()
    # No await until the hand-over: the queue's timer cannot fire before it.
    front.connection_made(front_transport)
    entry = front._head_timer
    assert entry is not None
    http.connection_made(http_transport)
    own = http._head_timer
    http._take_head_deadline(front)
    assert http._head_timer is entry and front._head_timer is None
    assert own is not None and own.owner is None, "the new protocol's own deadline is off"
    assert await eventually(lambda: http_transport.closed, within=5)
    assert expired == ["127.0.0.1:2"]
    assert not front_transport.closed
    deadline.pending.close()
