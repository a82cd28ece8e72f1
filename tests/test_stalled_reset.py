"""A stalled reader is reset, not orphaned: the client is told at once, the kernel lets go.

Aborting a socket whose send buffer is full used to leave the kernel holding the orphaned
socket (and its buffer) for minutes while the client heard nothing; with SO_LINGER 0 the
abort is a TCP reset.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets

from tests.support.clients import assert_still_serving
from tests.support.rawws import RawClient
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import channel_has, fetch_stats
from tests.support.waiting import eventually

SETTINGS = {"FANOUT_OUTBOX_MAX_BYTES": str(256 * 1024), "FANOUT_CLOSE_TIMEOUT": "1"}
BURST = 3000  # about 24 MB: bounds the test if the policy never triggers
WS_PROTOCOLS = {"websockets-sansio": [], "wsproto": ["--ws", "wsproto"]}


def server_side_sockets(server_port: int, client_port: int) -> list[str]:
    """The server's end of one connection as /proc/net/tcp lists it (empty once freed)."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.rsplit(":", 1)[1], 16) == server_port and (
                int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                rows.append(line)
    return rows


@pytest.mark.parametrize("ws", list(WS_PROTOCOLS))
async def test_a_stalled_reader_is_reset_and_its_socket_freed(
    start_server: StartServer, ws: str
) -> None:
    server: ServerProcess = start_server(SETTINGS, WS_PROTOCOLS[ws])
    stalled = await RawClient.open(server.port, "/ws/broadcast", rcvbuf=4096)
    assert stalled.status == 101
    stalled.stop_reading()
    client_port = stalled.writer.get_extra_info("sockname")[1]
    sender = await websockets.connect(server.ws("/ws/broadcast"), max_size=None)
    assert await eventually(lambda: channel_has(server, "default", 2))

    for sent in range(BURST):
        await sender.send(f"{sent:05d}" + "x" * 8000)
        assert await sender.recv()  # one at a time: only the stalled client falls behind
        if sent % 50 == 0 and (await fetch_stats(server))["slow_consumer_disconnects"]:
            break
    stats = await fetch_stats(server)
    assert stats["slow_consumer_disconnects"] == 1

    # FANOUT_CLOSE_TIMEOUT later the close frame is still stuck, and the socket is reset:
    # the server's end is gone from the kernel's table, send queue and all.
    assert await eventually(lambda: not server_side_sockets(server.port, client_port), within=15)

    # The client, reading again, hits the reset after what reached it before.
    stalled.resume_reading()
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(10):
            while await stalled.reader.read(1 << 20):
                pass

    assert await eventually(lambda: channel_has(server, "default", 1))
    stats = await fetch_stats(server)
    assert stats["closes"]["4008"] == 1
    assert "slow consumer broadcast#default" in server.log()
    await sender.close()
    await assert_still_serving(server)
