"""peer_address and local_address give what uvicorn's get_remote_addr and get_local_addr
give, on real accepted uvloop transports: TCP over IPv4 and IPv6, and a Unix socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import uvloop
from uvicorn.protocols.utils import get_local_addr, get_remote_addr

from app.server.addresses import local_address, peer_address

Answers = tuple[Any, Any, Any, Any]


class _Recorder(asyncio.Protocol):
    """Records both ways of reading the addresses of each connection it accepts."""

    def __init__(self, seen: asyncio.Queue[Answers]) -> None:
        self._seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t: Any = transport
        answers = (peer_address(t), get_remote_addr(t), local_address(t), get_local_addr(t))
        self._seen.put_nowait(answers)
        transport.close()


async def _answers_for(
    serve: Callable[[Callable[[], asyncio.Protocol]], Awaitable[asyncio.AbstractServer]],
    dial: Callable[[asyncio.AbstractServer], Awaitable[Any]],
) -> Answers:
    seen: asyncio.Queue[Answers] = asyncio.Queue(maxsize=1)
    server = await serve(lambda: _Recorder(seen))
    async with server:
        _reader, writer = await dial(server)
        answers = await asyncio.wait_for(seen.get(), 5)
        writer.close()
    return answers


def _run(coroutine: Awaitable[Answers]) -> Answers:
    async def main() -> Answers:
        return await coroutine

    return uvloop.run(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_addresses_are_uvicorns(host: str) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")

    async def serve(factory: Callable[[], asyncio.Protocol]) -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(factory, host, 0)

    async def dial(server: asyncio.AbstractServer) -> Any:
        port = cast(asyncio.Server, server).sockets[0].getsockname()[1]
        return await asyncio.open_connection(host, port)

    try:
        peer, uvicorn_peer, local, uvicorn_local = _run(_answers_for(serve, dial))
    except OSError as exc:  # ::1 not configured although the stack has IPv6
        if host == "::1":
            pytest.skip(f"IPv6 loopback unusable: {exc}")
        raise
    assert peer == uvicorn_peer
    assert local == uvicorn_local
    assert peer is not None and peer[0] == host
    assert local is not None and local[0] == host


def test_unix_socket_addresses_are_uvicorns(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")

    async def serve(factory: Callable[[], asyncio.Protocol]) -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_unix_server(factory, path)

    async def dial(server: asyncio.AbstractServer) -> Any:
        return await asyncio.open_unix_connection(path)

    peer, uvicorn_peer, local, uvicorn_local = _run(_answers_for(serve, dial))
    assert peer == uvicorn_peer
    assert local == uvicorn_local == (path, None)
