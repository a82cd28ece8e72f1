"""History channels: offsets, recovery on reconnect (same worker, another worker, another
host), trimmed and lost histories, the history command and API."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.protocol import V1Client, v1_client
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import workers_linked
from tests.support.waiting import eventually

RULES = """
[[channels]]
match = "hist.*"
history_size = 100
history_ttl = 600

[[channels]]
match = "short.*"
history_size = 5
history_ttl = 600

[[channels]]
match = "brief.*"
history_size = 100
history_ttl = 1
"""
KEY = "history-test-key"


@pytest.fixture(scope="module")
def rules_file() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="fanout-history-"))
    path = folder / "fanout.toml"
    path.write_text(RULES)
    yield path


def _env(rules_file: Path, **extra: str) -> dict[str, str]:
    return {"FANOUT_CONFIG": str(rules_file), "FANOUT_API_KEYS": KEY, **extra}


@pytest.fixture(scope="module")
def server(rules_file: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(_env(rules_file)).start()
    yield proc
    proc.stop()


async def _publish(client: V1Client, channel: str, count: int, start: int = 0) -> list[int]:
    offsets = []
    for i in range(start, start + count):
        reply = await client.call("pub", ch=channel, data={"n": i})
        offsets.append(reply["res"]["o"])
    return offsets


async def _pushes(client: V1Client, count: int) -> list[dict[str, Any]]:
    return [await client.push_json() for _ in range(count)]


async def test_publications_get_offsets_and_a_subscriber_its_position(
    server: ServerProcess,
) -> None:
    async with v1_client(server) as client:
        first = (await client.call("sub", ch="hist.a"))["res"]
        assert first["o"] == 0 and first["e"]
        reply = (await client.call("pub", ch="hist.a", text="one"))["res"]
        assert reply == {"o": 1, "e": first["e"]}
        assert await client.push_json() == {"ch": "hist.a", "o": 1, "s": "one"}


async def _recover_after_fifty(
    subscribe_to: ServerProcess, publish_to: ServerProcess, channel: str
) -> None:
    async with v1_client(subscribe_to) as listener:
        position = (await listener.call("sub", ch=channel))["res"]
    async with v1_client(publish_to) as publisher:
        await publisher.subscribe(channel)
        await _publish(publisher, channel, 50)
    async with v1_client(subscribe_to) as back:
        since = {"o": position["o"], "e": position["e"]}
        reply = (await back.call("sub", ch=channel, since=since))["res"]
        assert reply["recovered"] is True
        assert [p["o"] for p in reply["pubs"]] == list(range(position["o"] + 1, position["o"] + 51))
        assert [p["d"]["n"] for p in reply["pubs"]] == list(range(50))
        async with v1_client(publish_to) as publisher:
            await publisher.subscribe(channel)
            await _publish(publisher, channel, 3, start=50)
        live = await _pushes(back, 3)
        assert [p["o"] for p in live] == list(range(position["o"] + 51, position["o"] + 54))


async def test_a_client_recovers_exactly_what_it_missed_then_live_ones(
    server: ServerProcess,
) -> None:
    await _recover_after_fifty(server, server, "hist.same")


async def test_recovery_on_another_worker(start_server: StartServer, rules_file: Path) -> None:
    server = start_server(_env(rules_file), args=["--workers", "2"])
    # /healthz answers once one worker serves; the other may still be starting.
    assert await eventually(lambda: workers_linked(server, 2), within=20)
    async with AsyncExitStack() as stack:
        seen: dict[str, V1Client] = {}
        for _ in range(200):
            client = await stack.enter_async_context(v1_client(server))
            worker = (await client.call("connect"))["res"]["client"].rsplit("-", 1)[0]
            seen.setdefault(worker, client)
            if len(seen) == 2:
                break
        assert len(seen) == 2, "both workers must answer"
        a, b = seen.values()
        position = (await a.call("sub", ch="hist.w"))["res"]
        await b.subscribe("hist.w")
        await _publish(b, "hist.w", 20)
        got = await _pushes(a, 20)
        assert [p["o"] for p in got] == list(range(1, 21))  # in order, once, on both
        history = (await b.call("history", ch="hist.w", since=position))["res"]
        assert [p["o"] for p in history["pubs"]] == list(range(1, 21))
        assert history["e"] == position["e"]


async def test_a_history_trimmed_past_since_is_not_recovered(server: ServerProcess) -> None:
    async with v1_client(server) as client:
        position = (await client.call("sub", ch="short.t"))["res"]
        await _publish(client, "short.t", 10)
    async with v1_client(server) as back:
        reply = (await back.call("sub", ch="short.t", since=position))["res"]
        assert reply["recovered"] is False and reply["pubs"] == []
        assert reply["o"] == position["o"] + 10 and reply["e"] == position["e"]
        history = (await back.call("history", ch="short.t"))["res"]
        assert [p["o"] for p in history["pubs"]] == list(range(6, 11))  # the last five


async def test_an_expired_history_starts_a_new_epoch(server: ServerProcess) -> None:
    async with v1_client(server) as client:
        await client.subscribe("brief.x")
        await _publish(client, "brief.x", 2)
        position = (await client.call("history", ch="brief.x", limit=0))["res"]

    async def expired() -> bool:
        async with v1_client(server) as probe:
            reply = (await probe.call("sub", ch="brief.x", since=position))["res"]
            return reply["recovered"] is False and reply["e"] != position["e"]

    assert await eventually(expired, within=10, step=0.5)


async def test_the_http_api_publishes_with_offsets_and_reads_history(
    server: ServerProcess,
) -> None:
    headers = {"X-API-Key": KEY}
    async with httpx.AsyncClient(base_url=server.base, headers=headers) as http:
        first = (await http.post("/api/publish", json={"channel": "hist.api", "data": [1]})).json()
        second = await http.post("/api/publish", json={"channel": "hist.api", "text": "t"})
        assert second.json()["result"]["offset"] == first["result"]["offset"] + 1
        history = (await http.post("/api/history", json={"channel": "hist.api"})).json()
        pubs = history["result"]["publications"]
        assert pubs[-2:] == [
            {"offset": first["result"]["offset"], "data": [1]},
            {"offset": first["result"]["offset"] + 1, "text": "t"},
        ]
        assert history["result"]["epoch"] == first["result"]["epoch"]
        missing = await http.post("/api/history", json={"channel": "plain.none"})
        assert missing.status_code == 404


async def test_recovery_across_hosts_and_a_lost_epoch_after_flushall(
    start_server: StartServer, redis_server: RedisServer, rules_file: Path
) -> None:
    env = _env(rules_file, FANOUT_BACKEND=redis_server.url)
    one, two = start_server(env), start_server(env)
    await _recover_after_fifty(one, two, "hist.hosts")
    async with v1_client(one) as client:
        position = (await client.call("sub", ch="hist.hosts"))["res"]
    redis.Redis.from_url(redis_server.url).flushall()
    async with v1_client(two) as back:
        reply = (await back.call("sub", ch="hist.hosts", since=position))["res"]
        assert reply["recovered"] is False and reply["e"] != position["e"]
    assert json.dumps(reply)  # a plain JSON answer


async def test_a_raw_socket_on_a_history_channel_publishes_through_the_history(
    server: ServerProcess,
) -> None:
    import websockets

    async with (
        v1_client(server) as listener,
        websockets.connect(server.ws("/ws/broadcast/hist.raw")) as raw,
    ):
        await listener.call("sub", ch="hist.raw")
        for i in range(3):
            await raw.send(f"raw {i}")
        got = await _pushes(listener, 3)
        assert [(p["o"], p["s"]) for p in got] == [(1, "raw 0"), (2, "raw 1"), (3, "raw 2")]
        assert [await raw.recv() for _ in range(3)] == ["raw 0", "raw 1", "raw 2"]


async def test_one_publishers_messages_keep_their_order_on_redis(
    start_server: StartServer, redis_server: RedisServer, rules_file: Path
) -> None:
    env = _env(rules_file, FANOUT_BACKEND=redis_server.url)
    server = start_server(env)
    async with v1_client(server) as publisher, v1_client(server) as listener:
        await publisher.subscribe("hist.order")
        await listener.call("sub", ch="hist.order")
        for i in range(200):  # no id, no waiting: every append is in flight at once
            await publisher.ws.send(json.dumps({"op": "pub", "ch": "hist.order", "data": i}))
        got = await _pushes(listener, 200)
        assert [p["d"] for p in got] == list(range(200))
        assert [p["o"] for p in got] == list(range(1, 201))


async def test_redis_stalled_meanwhile_every_acknowledged_message_arrives_once_in_order(
    start_server: StartServer, redis_server: RedisServer, rules_file: Path
) -> None:
    # Redis stops answering for 3 s (SIGSTOP) while a publisher on the other host keeps
    # publishing: the stream keeps what it held, and the listener gets every message that
    # was acknowledged, once, in order, with no gap notice (holes are filled from the store).
    fast = {"FANOUT_REDIS_RECONNECT_MAX": "0.3", "FANOUT_REDIS_TIMEOUT": "1"}
    env = _env(rules_file, FANOUT_BACKEND=redis_server.url, **fast)
    one, two = start_server(env), start_server(env)
    async with v1_client(one) as listener, v1_client(two) as publisher:
        await listener.call("sub", ch="hist.stall")
        await publisher.subscribe("hist.stall")
        acked: list[int] = []
        n = 0

        async def publish_for(seconds: float) -> None:
            nonlocal n
            end = asyncio.get_running_loop().time() + seconds
            while asyncio.get_running_loop().time() < end:
                reply = await publisher.call("pub", ch="hist.stall", data=n, within=15)
                if "res" in reply:
                    acked.append(n)
                else:
                    assert reply["error"]["code"] == 503, reply
                n += 1
                await asyncio.sleep(0.05)

        await publish_for(1)
        redis_server.pause()
        try:
            await publish_for(3)
        finally:
            redis_server.resume()
        await publish_for(2)
        pushes: list[dict[str, Any]] = []

        async def got_every_acked() -> bool:
            while True:
                try:
                    pushes.append(await listener.push_json(within=0.2))
                except TimeoutError:
                    break
            received = {p["d"] for p in pushes if "d" in p}
            return set(acked) <= received

        assert await eventually(got_every_acked, within=20, step=0.1)
        data = [p["d"] for p in pushes if "d" in p]
        assert data == sorted(set(data))  # once each, in order
        assert [p for p in pushes if p.get("ev") == "gap"] == []
        offsets = [p["o"] for p in pushes if "d" in p]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
