"""redis:// across hosts: two separate servers sharing one real redis-server.

Each "host" is its own uvicorn server on its own port (in its own local group), so nothing
but Redis joins them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats
from tests.support.waiting import eventually

Client = websockets.ClientConnection
FAST = {"FANOUT_HEARTBEAT_INTERVAL": "0.25", "FANOUT_HEARTBEAT_EXPIRY": "1.5"}


async def healthz(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(f"{server.base}/healthz")
        body: dict[str, Any] = response.json()
        return response.status_code, body


async def counts_both(server: ServerProcess, total: int, workers: int) -> bool:
    stats = await fetch_stats(server)
    return bool(stats["connections"]["total"] == total and len(stats["workers"]) == workers)


async def recv_text(ws: Client, within: float = 10.0) -> str:
    msg = await asyncio.wait_for(ws.recv(), within)
    assert isinstance(msg, str)
    return msg


def two_hosts(
    start_server: StartServer, redis: RedisServer, workers: int = 1
) -> tuple[ServerProcess, ServerProcess]:
    env = {"FANOUT_BACKEND": redis.url, **FAST}
    args = ["--workers", str(workers)] if workers > 1 else []
    return start_server(env=env, args=args), start_server(env=env, args=args)


async def test_two_servers_see_each_others_messages_and_counts(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = two_hosts(start_server, redis_server, workers=2)
    clients_a = [await websockets.connect(a.ws("/ws/broadcast/room")) for _ in range(3)]
    clients_b = [await websockets.connect(b.ws("/ws/broadcast/room")) for _ in range(3)]
    everyone = clients_a + clients_b
    try:
        for server in (a, b):
            seen: dict[str, Any] = {}

            async def counted_on(s: ServerProcess = server, seen: dict[str, Any] = seen) -> bool:
                # Judge one response as a whole: the next may come from a worker whose view
                # of the others is a heartbeat older.
                stats = seen["stats"] = await fetch_stats(s)
                return bool(
                    stats["connections"]["total"] == 6
                    and len(stats["workers"]) == 4
                    and stats["channels"].get("room") == 6
                )

            assert await eventually(counted_on, within=15)
            stats = seen["stats"]
            assert stats["backend"]["name"] == "redis"
            assert stats["backend"]["status"] == "up"
            assert {w["backend"]["name"] for w in stats["workers"]} == {"redis"}

        await clients_a[0].send("from a")
        await clients_b[0].send(b"\x00from b")
        for ws in everyone:
            got = {await ws.recv(), await ws.recv()}
            assert got == {"from a", b"\x00from b"}
        for ws in everyone:  # exactly once: the publisher's own copy does not come back
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3 if ws is everyone[0] else 0.02)

        async def counted() -> bool:
            stats = await fetch_stats(a)
            return bool(stats["messages"]["received"] == 2 and stats["messages"]["delivered"] == 12)

        assert await eventually(counted, within=10)
    finally:
        await asyncio.gather(*(ws.close() for ws in everyone))
    assert await eventually(lambda: counts_both(b, 0, 4), within=10)


async def test_redis_outage_local_keeps_working_and_cross_host_resumes(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = two_hosts(start_server, redis_server)
    async with (
        websockets.connect(a.ws("/ws/broadcast")) as a1,
        websockets.connect(a.ws("/ws/broadcast")) as a2,
        websockets.connect(b.ws("/ws/broadcast")) as b1,
    ):
        assert await eventually(lambda: counts_both(a, 3, 2), within=15)
        await a1.send("before")
        for ws in (a1, a2, b1):
            assert await recv_text(ws) == "before"

        redis_server.kill()
        # Every client is told that messages from elsewhere may be missing.
        for ws in (a1, a2, b1):
            notice = json.loads(await recv_text(ws))
            assert notice == {"type": "fanout.gap", "reason": "backend_down"}
        for server in (a, b):
            status, body = await healthz(server)
            assert status == 503 and body["backend"]["status"] == "down"
            stats = await fetch_stats(server)
            assert stats["backend"]["status"] == "down"

        # Local broadcast goes on; publishing has a defined result (counted, not a hang).
        await a1.send("during")
        assert await recv_text(a1) == "during"
        assert await recv_text(a2) == "during"
        await b1.send("b alone")
        assert await recv_text(b1) == "b alone"
        stats = await fetch_stats(a)
        assert stats["backend"]["publish_dropped"] >= 1
        await asyncio.sleep(3)  # several seconds of outage: reconnect attempts keep failing

        redis_server.start()
        for ws in (a1, a2, b1):
            notice = json.loads(await recv_text(ws, within=15))
            assert notice == {"type": "fanout.gap", "reason": "backend_reconnected"}

        async def both_up() -> bool:
            return (await healthz(a))[0] == 200 and (await healthz(b))[0] == 200

        assert await eventually(both_up, within=10)
        await a2.send("after")
        for ws in (a1, a2, b1):
            assert await recv_text(ws) == "after"
        await b1.send("after from b")
        for ws in (a1, a2, b1):
            assert await recv_text(ws) == "after from b"
        assert await eventually(lambda: counts_both(b, 3, 2), within=10)
        stats = await fetch_stats(a)
        assert stats["backend"]["outages"] == 1


async def test_server_starts_without_redis_and_joins_when_it_comes(
    redis_server: RedisServer,
) -> None:
    redis_server.kill()
    server = ServerProcess(env={"FANOUT_BACKEND": redis_server.url, **FAST})
    # ServerProcess.start() returns once /healthz is healthy, which needs Redis: run it in a
    # thread and check the degraded server meanwhile.
    started = asyncio.ensure_future(asyncio.to_thread(server.start, 30.0))
    try:

        async def serving() -> bool:
            try:
                return (await healthz(server))[0] == 503
            except httpx.HTTPError:
                return False

        assert await eventually(serving, within=20), "a worker serves while Redis is away"
        _, body = await healthz(server)
        assert body["backend"]["status"] == "down"
        async with websockets.connect(server.ws("/ws/broadcast")) as ws:
            await ws.send("local only")
            assert await recv_text(ws) == "local only"
            redis_server.start()
            await asyncio.wait_for(started, 25)
            assert (await healthz(server))[0] == 200
    finally:
        await asyncio.gather(started, return_exceptions=True)
        server.stop()
