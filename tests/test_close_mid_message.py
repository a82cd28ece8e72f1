"""Control frames between the fragments of a message are answered as RFC 6455 says.

A close frame in the middle of a fragmented message ends the connection cleanly: the
server echoes the client's close (1000, not 1002) and the unfinished message is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from app.server.conformance import CloseMidMessageProtocol
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


def test_an_opened_protocol_is_what_the_library_constructor_builds() -> None:
    logger = logging.getLogger("uvicorn.error")
    template = CloseMidMessageProtocol.template(max_size=1000, logger=logger)
    built = CloseMidMessageProtocol(state=OPEN, max_size=1000, logger=logger)
    first, second = (CloseMidMessageProtocol.opened(template) for _ in range(2))
    # The same attributes in the same order (so instances share their keys), alike but for
    # what each connection owns, which is its own; the id is made when read.
    assert list(vars(first)) == list(vars(built))
    for name, value in vars(built).items():
        if name not in ("_id", "reader", "parser"):
            assert vars(first)[name] == value, name
    for name in ("reader", "events", "writes", "parser", "extensions"):
        assert getattr(first, name) is not getattr(second, name), name
    assert isinstance(first.id, uuid.UUID) and first.id == first.id != second.id
    # It parses like the constructed one: a masked text frame, then a frame over max_size.
    frame = Frame(Opcode.TEXT, b"hello").serialize(mask=True)
    for protocol in (first, built):
        protocol.receive_data(frame)
        [event] = protocol.events_received()
        assert isinstance(event, Frame) and event.data == b"hello"
        protocol.receive_data(Frame(Opcode.TEXT, b"x" * 1001).serialize(mask=True))
        assert protocol.close_sent is not None and protocol.close_sent.code == 1009
    # And the end of the stream before any byte (its parser not started yet) alike too.
    ended = [
        CloseMidMessageProtocol.opened(template),
        CloseMidMessageProtocol(state=OPEN, max_size=1000, logger=logger),
    ]
    for protocol in ended:
        protocol.receive_eof()
    answers = [
        (p.state, p.data_to_send(), p.close_expected(), p.events_received(), str(p.parser_exc))
        for p in ended
    ]
    assert answers[0] == answers[1]
