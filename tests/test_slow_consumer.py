"""A client that stops reading is closed and counted; nobody else waits for it."""

from __future__ import annotations

import asyncio

import websockets
from websockets.typing import Data

from tests.support.clients import all_binary, assert_still_serving, receive_many
from tests.support.rawws import RawClient
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import channel_has, fetch_stats
from tests.support.waiting import eventually

MESSAGE = 8 * 1024
COUNT = 1200  # about 10 MB through the stalled client's share of the server
WINDOW = 16


async def test_stalled_reader_is_closed_and_others_get_everything(
    start_server: StartServer,
) -> None:
    server: ServerProcess = start_server(
        {"FANOUT_OUTBOX_MAX_BYTES": str(512 * 1024), "FANOUT_CLOSE_TIMEOUT": "1"}
    )
    # Completes the handshake, then never reads a byte; a tiny receive buffer keeps the
    # kernel from absorbing megabytes on its behalf.
    stalled = await RawClient.open(server.port, "/ws/broadcast", rcvbuf=4096)
    assert stalled.status == 101
    stalled.stop_reading()
    sender = await websockets.connect(server.ws("/ws/broadcast"), max_size=None)
    readers = [
        await websockets.connect(server.ws("/ws/broadcast"), max_size=None) for _ in range(3)
    ]
    assert await eventually(lambda: channel_has(server, "default", 5))

    received = [asyncio.create_task(receive_many(ws, COUNT)) for ws in readers]
    own = asyncio.Semaphore(WINDOW)

    async def echo_back() -> list[Data]:
        got: list[Data] = []
        for _ in range(COUNT):
            got.append(await asyncio.wait_for(sender.recv(), 30))
            own.release()
        return got

    own_copy = asyncio.create_task(echo_back())
    for i in range(COUNT):
        await own.acquire()  # a bounded window: the sender waits for its own copy
        await sender.send(i.to_bytes(4, "big") + b"\0" * (MESSAGE - 4))

    expected = list(range(COUNT))
    for task in [*received, own_copy]:
        messages = await task
        assert all_binary(messages)
        assert [int.from_bytes(m[:4], "big") for m in messages] == expected

    async def stalled_closed() -> bool:
        stats = await fetch_stats(server)
        return bool(stats["slow_consumer_disconnects"] == 1 and stats["channels"]["default"] == 4)

    assert await eventually(stalled_closed, within=15)
    stats = await fetch_stats(server)
    assert stats["messages"]["dropped"] > 0
    assert stats["closes"]["4008"] == 1
    assert "slow consumer broadcast#default" in server.log()

    # The server has given up the stalled socket: reading it now ends in EOF or a reset.
    stalled.resume_reading()
    assert await _drains_to_end(stalled)

    for ws in [sender, *readers]:
        await ws.close()
    await assert_still_serving(server)


async def test_slow_but_reading_client_gets_close_code_4008(start_server: StartServer) -> None:
    server: ServerProcess = start_server(
        {"FANOUT_OUTBOX_MAX_BYTES": str(256 * 1024), "FANOUT_CLOSE_TIMEOUT": "20"}
    )
    slow = await RawClient.open(server.port, "/ws/broadcast", rcvbuf=4096)
    slow.stop_reading()
    sender = await websockets.connect(server.ws("/ws/broadcast"), max_size=None)
    assert await eventually(lambda: channel_has(server, "default", 2))
    sent = 0
    while sent < BURST:
        await sender.send(f"{sent:05d}" + "x" * 8000)
        assert await sender.recv()  # one at a time: only the slow client falls behind
        sent += 1
        if sent % 100 == 0 and await _slow_count(server, 1):
            break
    assert await _slow_count(server, 1)
    # Now it reads: what was written to it arrives intact and in order, then the 4008 frame.
    slow.resume_reading()
    frames, close = await asyncio.wait_for(slow.recv_until_close(), 15)
    assert close is not None and close.close_code == 4008
    numbers = [int(f.payload[:5]) for f in frames]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) < sent
    await slow.close()
    await sender.close()


BURST = 3000  # about 24 MB: bounds the test if the policy never triggers


async def _slow_count(server: ServerProcess, n: int) -> bool:
    return bool((await fetch_stats(server))["slow_consumer_disconnects"] == n)


async def _drains_to_end(client: RawClient) -> bool:
    """True when the socket ends (EOF or reset) within the bound; False if it stays open."""
    try:
        async with asyncio.timeout(15):
            while await client.reader.read(1 << 20):
                pass
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False
    return True
