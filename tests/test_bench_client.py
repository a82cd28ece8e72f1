"""The generator's raw client against an in-process websockets server: handshake,
counting, payload timestamps, publishing with a window, pings."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench import protocol as wsp
from bench.client import SO_TIMESTAMPNS, Publisher, Worker


class NullPipe:
    def send(self, obj: Any) -> None:
        pass

    def fileno(self) -> int:
        return -1


@contextlib.contextmanager
def kernel_timestamps_on() -> Iterator[None]:
    """Hold the kernel's receive timestamps on for the block.

    Linux switches TCP receive timestamps on with deferred work when the first socket asks
    for them (and off when the last one closes): until then a read carries no timestamp.
    A loopback pair with SO_TIMESTAMPNS, kept open, waits for the first stamped read.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
        with sender, receiver:
            receiver.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            for _ in range(500):
                sender.send(b"x")
                _, ancillary, _, _ = receiver.recvmsg(16, 64)
                if ancillary:
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("the kernel never stamped a loopback read")
            yield


async def test_subscribers_count_frames_and_publisher_window() -> None:
    with kernel_timestamps_on():
        await _count_frames_and_window()


async def _count_frames_and_window() -> None:
    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            async for m in ws:
                broadcast(clients, m)
        finally:
            clients.discard(ws)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        w = Worker(NullPipe(), 1, "127.0.0.1", port)  # type: ignore[arg-type]
        subs = [
            await w.open_one("/ws/broadcast", "sub", wsp.PAYLOAD_MIN, ["127.0.0.2"], 5)
            for _ in range(3)
        ]
        # One subscriber on a plain socket with kernel receive timestamps.
        subs.append(await w.open_one_ts("/ws/broadcast", "sub", wsp.PAYLOAD_MIN, [], 5))
        w.conns.extend(subs)
        pub_conn = await w.open_one("/ws/broadcast", "pub", wsp.PAYLOAD_MIN, [], 5)
        pub = Publisher(pub_conn, 7, {"size": 64, "window": 4, "max_messages": 50})
        for _ in range(100):
            if len(clients) == 5:
                break
            await asyncio.sleep(0.01)
        w.recording = True
        now = time.monotonic()
        pub.start(now, now + 10)
        for _ in range(500):
            if all(s.parser.frames >= 50 for s in subs) and pub.acked >= 50:
                break
            await asyncio.sleep(0.01)
        assert pub.sent == 50 and pub.acked == 50
        assert [s.parser.frames for s in subs] == [50, 50, 50, 50]
        assert all(s.parser.bytes == 50 * 64 for s in subs)
        assert len(w.latencies_app) == 200 and all(x >= 0 for x in w.latencies_app)
        assert len(w.latencies) == 50, "kernel-stamped samples come from the plain socket only"
        assert all(0 <= x < 5_000_000_000 for x in w.latencies)

        # The client answers pings by itself, and counts the server's pongs.
        ws = next(iter(clients))
        await asyncio.wait_for(await ws.ping(), 5)
        reply = await w.cmd_ping({"timeout": 5})
        assert reply == {"alive": 4, "open": 4}
        await w.cmd_close({})
