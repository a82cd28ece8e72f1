"""Control frames between the fragments of a message are answered as RFC 6455 says.

A close frame in the middle of a fragmented message ends the connection cleanly: the
server echoes the client's close (1000, not 1002) and the unfinished message is dropped.
"""

from __future__ import annotations

import asyncio
import struct

from tests.support.clients import assert_still_serving
from tests.support.rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawClient
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats
from tests.support.waiting import eventually

OP_CONTINUATION = 0x0
NORMAL = struct.pack("!H", 1000) + b"bye"


async def test_a_close_between_fragments_is_echoed_and_ends_the_connection_cleanly(
    server: ServerProcess,
) -> None:
    before = (await fetch_stats(server))["closes"]
    client = await RawClient.open(server.port, "/ws/echo")
    assert client.status == 101
    port = client.writer.get_extra_info("sockname")[1]
    await client.send(OP_TEXT, b"unfinish", fin=False)
    await client.send(OP_CLOSE, NORMAL)

    frames, close = await asyncio.wait_for(client.recv_until_close(), 10)
    assert frames == []  # the unfinished message is not delivered
    assert close is not None
    assert close.close_code == 1000
    assert close.payload == NORMAL  # the client's close, echoed
    assert await asyncio.wait_for(client.reader.read(), 10) == b""  # then a clean end
    await client.close()

    # hypercorn reports every close the client starts as 1006 to the application.
    code = "1006" if server.program == "hypercorn" else "1000"
    assert await eventually(lambda: _closes_with(server, code, before.get(code, 0) + 1))
    closes = (await fetch_stats(server))["closes"]
    assert closes.get("1002", 0) == before.get("1002", 0)
    lines = [
        line
        for line in server.log().splitlines()
        if f"disconnect echo peer=127.0.0.1:{port} " in line
    ]
    assert len(lines) == 1 and f"code={code} " in lines[0]
    await assert_still_serving(server)


async def test_a_ping_between_fragments_is_answered_and_the_message_completes(
    server: ServerProcess,
) -> None:
    client = await RawClient.open(server.port, "/ws/echo")
    await client.send(OP_TEXT, b"hel", fin=False)
    await client.send(OP_PING, b"are you there")
    await client.send(OP_CONTINUATION, b"lo")
    pong = await asyncio.wait_for(client.recv_frame(), 10)
    assert (pong.opcode, pong.payload) == (OP_PONG, b"are you there")
    echo = await asyncio.wait_for(client.recv_frame(), 10)
    assert (echo.opcode, echo.payload) == (OP_TEXT, b"hello")
    await client.send(OP_CLOSE, NORMAL)
    _, close = await asyncio.wait_for(client.recv_until_close(), 10)
    assert close is not None and close.close_code == 1000
    await client.close()


async def _closes_with(server: ServerProcess, code: str, expected: int) -> bool:
    return bool((await fetch_stats(server))["closes"].get(code, 0) == expected)


async def test_a_new_message_before_the_fragmented_one_ends_is_still_1002(
    start_server: StartServer,
) -> None:
    """The fix on uvicorn's default protocol lets a close through, nothing else."""
    server = start_server()
    client = await RawClient.open(server.port, "/ws/echo")
    await client.send(OP_TEXT, b"hel", fin=False)
    await client.send(OP_TEXT, b"lo")
    _, close = await asyncio.wait_for(client.recv_until_close(), 10)
    assert close is not None and close.close_code == 1002
    await client.close()
