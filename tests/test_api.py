"""The HTTP API (POST /api/*) against real servers: real httpx requests, real WebSocket
subscribers on both kinds of sockets, real workers and a real Redis for idempotency."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support.clients import assert_still_serving
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats, workers_linked
from tests.support.waiting import eventually

Client = websockets.ClientConnection
KEYS = "key-old,key-new"
KEY = "key-new"
LIMIT = 4096
FAST = {"FANOUT_HEARTBEAT_INTERVAL": "0.25", "FANOUT_HEARTBEAT_EXPIRY": "1.5"}
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {"FANOUT_API_KEYS": KEYS, "FANOUT_MAX_MESSAGE_BYTES": str(LIMIT)}
    proc = ServerProcess(env).start()
    yield proc
    proc.stop()


async def post(
    server: ServerProcess, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base, timeout=10.0) as client:
        return await client.post(path, headers=AUTH if headers is None else headers, **kwargs)


@asynccontextmanager
async def both(server: ServerProcess, channel: str) -> AsyncIterator[tuple[Client, Client]]:
    """A raw ``/ws/broadcast/{channel}`` client and a fanout.v1 client subscribed to it."""
    async with (
        websockets.connect(server.ws(f"/ws/broadcast/{channel}")) as raw,
        websockets.connect(server.ws("/ws"), subprotocols=["fanout.v1"]) as v1,  # type: ignore[list-item]
    ):
        await v1.send(json.dumps({"id": 1, "op": "sub", "ch": channel}))
        assert json.loads(await v1.recv()) == {"id": 1, "res": {}}
        yield raw, v1


async def recv(ws: Client, within: float = 5.0) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), within)


async def nothing_more(ws: Client, within: float = 0.5) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), within)
    except TimeoutError:
        return True
    return False


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- publishing -----------------------------------------------------------------------------


async def test_json_data_reaches_raw_clients_as_its_exact_bytes_and_v1_clients_enveloped(
    server: ServerProcess,
) -> None:
    channel = unique("news")
    before = await fetch_stats(server)
    data = '{ "b" : [1, 2.50, "é"],"a":null }'  # spacing, key order, non-ASCII: all kept
    async with both(server, channel) as (raw, v1):
        body = f'{{"channel":"{channel}","data":{data}}}'.encode()
        response = await post(server, "/api/publish", content=body)
        assert (response.status_code, response.content) == (200, b'{"result":{}}')
        assert response.headers["content-type"] == "application/json"
        assert await recv(raw) == data
        assert await recv(v1) == f'{{"ch":"{channel}","d":{data}}}'
    after = await fetch_stats(server)
    assert after["messages"]["published_api"] - before["messages"]["published_api"] == 1


async def test_text_reaches_raw_clients_as_text_and_v1_clients_as_s(server: ServerProcess) -> None:
    channel = unique("news")
    async with both(server, channel) as (raw, v1):
        response = await post(server, "/api/publish", json={"channel": channel, "text": "hé {x}"})
        assert response.json() == {"result": {}}
        assert await recv(raw) == "hé {x}"
        assert json.loads(await recv(v1)) == {"ch": channel, "s": "hé {x}"}


async def test_b64data_is_published_as_a_binary_message(server: ServerProcess) -> None:
    channel = unique("news")
    payload = b"\x00\xffbinary"
    async with both(server, channel) as (raw, v1):
        body = {"channel": channel, "b64data": base64.b64encode(payload).decode()}
        response = await post(server, "/api/publish", json=body)
        assert response.json() == {"result": {}}
        assert await recv(raw) == payload
        head = bytes([0x01, 0x00, len(channel)]) + channel.encode()
        assert await recv(v1) == head + payload


@pytest.mark.parametrize(
    ("content_type", "body", "raw_gets", "v1_gets"),
    [
        ("text/plain; charset=utf-8", "plain é".encode(), "plain é", '"s":"plain é"'),
        ("application/json", b' {"k": [1,2]}\n', '{"k": [1,2]}', '"d":{"k": [1,2]}'),
        ("application/octet-stream", b"\x01\x02", b"\x01\x02", None),
    ],
)
async def test_publish_to_a_channel_path_sends_the_body_as_its_content_type_says(
    server: ServerProcess,
    content_type: str,
    body: bytes,
    raw_gets: str | bytes,
    v1_gets: str | None,
) -> None:
    channel = unique("curl")
    headers = {**AUTH, "Content-Type": content_type}
    async with both(server, channel) as (raw, v1):
        response = await post(server, f"/api/publish/{channel}", content=body, headers=headers)
        assert response.json() == {"result": {}}
        assert await recv(raw) == raw_gets
        got = await recv(v1)
        if v1_gets is None:
            assert got == bytes([0x01, 0x00, len(channel)]) + channel.encode() + raw_gets  # type: ignore[operator]
        else:
            assert got == f'{{"ch":"{channel}",{v1_gets}}}'


async def test_broadcast_publishes_to_every_channel_and_answers_each_one(
    server: ServerProcess,
) -> None:
    channels = [unique("b1"), unique("b2"), unique("b3")]
    before = await fetch_stats(server)
    async with (
        both(server, channels[0]) as (raw0, v10),
        both(server, channels[1]) as (raw1, _),
        websockets.connect(server.ws(f"/ws/broadcast/{channels[2]}")) as raw2,
    ):
        body = {"channels": [*channels, "not a channel"], "data": {"n": 1}}
        response = await post(server, "/api/broadcast", json=body)
        assert response.status_code == 200
        responses = response.json()["result"]["responses"]
        assert responses[:3] == [{"result": {}}] * 3
        assert responses[3]["error"]["code"] == 400
        for ws in (raw0, raw1, raw2):
            assert await recv(ws) == '{"n":1}'
        assert await recv(v10) == f'{{"ch":"{channels[0]}","d":{{"n":1}}}}'
    after = await fetch_stats(server)
    assert after["messages"]["published_api"] - before["messages"]["published_api"] == 3


async def test_a_message_exactly_at_the_limit_is_published(server: ServerProcess) -> None:
    channel = unique("big")
    async with websockets.connect(server.ws(f"/ws/broadcast/{channel}")) as raw:
        body = b"x" * LIMIT
        response = await post(server, f"/api/publish/{channel}", content=body)
        assert response.status_code == 200
        assert await recv(raw) == body


# -- bad input: a status, a counter, a log line, and everyone else served -------------------


async def _chunks(size: int) -> AsyncIterator[bytes]:
    yield b"y" * (size // 2)
    yield b"y" * (size - size // 2)


BAD_INPUTS: dict[str, tuple[int, str, dict[str, Any]]] = {
    "body not JSON": (400, "/api/publish", {"content": b"{not json"}),
    "JSON not an object": (400, "/api/publish", {"content": b"[1]"}),
    "missing channel": (400, "/api/publish", {"json": {"data": 1}}),
    "bad channel": (400, "/api/publish", {"json": {"channel": "a b", "data": 1}}),
    "reserved channel": (400, "/api/publish", {"json": {"channel": "fanout:control", "data": 1}}),
    "bad channel in path": (400, "/api/publish/a:b", {"content": b"x"}),
    "both data and text": (400, "/api/publish", {"json": {"channel": "c", "data": 1, "text": "t"}}),
    "no data at all": (400, "/api/publish", {"json": {"channel": "c"}}),
    "bad base64": (400, "/api/publish", {"json": {"channel": "c", "b64data": "!!"}}),
    "empty idempotency key": (
        400,
        "/api/publish",
        {"json": {"channel": "c", "data": 1, "idempotency_key": ""}},
    ),
    "idempotency key too long": (
        400,
        "/api/publish",
        {"json": {"channel": "c", "data": 1, "idempotency_key": "k" * 257}},
    ),
    "empty broadcast": (400, "/api/broadcast", {"json": {"channels": [], "data": 1}}),
    "oversize data": (413, "/api/publish", {"json": {"channel": "c", "text": "é" * LIMIT}}),
    "oversize body by Content-Length": (413, "/api/publish/c", {"content": b"z" * (LIMIT + 1)}),
    "oversize body sent chunked": (413, "/api/publish/c", {"content": _chunks}),
    "no key": (401, "/api/publish", {"json": {"channel": "c", "data": 1}, "headers": {}}),
    "wrong key": (
        401,
        "/api/publish",
        {"json": {"channel": "c", "data": 1}, "headers": {"X-API-Key": "sekrit-wrong"}},
    ),
    "wrong Authorization key": (
        401,
        "/api/publish",
        {"json": {"channel": "c", "data": 1}, "headers": {"Authorization": "apikey nope-123"}},
    ),
    "unknown API method": (404, "/api/nope", {"json": {}}),
}


async def refused(server: ServerProcess, status: int, path: str, **kwargs: Any) -> dict[str, Any]:
    """Send a bad request; check its answer, its counter and its log line; return the body."""
    before = await fetch_stats(server)
    log_before = server.log().count(f"refused {status} from")
    if callable(kwargs.get("content")):
        kwargs["content"] = kwargs["content"](LIMIT + 1)  # a fresh generator: no Content-Length
    response = await post(server, path, **kwargs)
    assert response.status_code == status
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    after = await fetch_stats(server)
    assert after["http_errors"].get(str(status), 0) - before["http_errors"].get(str(status), 0) == 1
    assert after["messages"]["published_api"] == before["messages"]["published_api"]
    assert await eventually(lambda: server.log().count(f"refused {status} from") == log_before + 1)
    return body


@pytest.mark.parametrize("case", list(BAD_INPUTS))
async def test_bad_request_is_refused_counted_and_logged_and_the_server_serves_on(
    server: ServerProcess, case: str
) -> None:
    status, path, kwargs = BAD_INPUTS[case]
    channel = unique("bystander")
    async with websockets.connect(server.ws(f"/ws/broadcast/{channel}")) as bystander:
        await refused(server, status, path, **kwargs)
        assert await nothing_more(bystander, 0.1)
        # The API itself serves the next request.
        response = await post(server, "/api/publish", json={"channel": channel, "text": "ok"})
        assert response.status_code == 200
        assert await recv(bystander) == "ok"
    await assert_still_serving(server)
    for secret in ("sekrit-wrong", "nope-123", KEY):
        assert secret not in server.log()


async def test_api_without_configured_keys_is_disabled_with_403(
    start_server: StartServer,
) -> None:
    server = start_server(env={"FANOUT_API_KEYS": ""})
    body = await refused(server, 403, "/api/publish", json={"channel": "c", "data": 1})
    assert body == {"error": {"code": 403, "message": "HTTP API disabled: set FANOUT_API_KEYS"}}
    await assert_still_serving(server)


async def test_either_of_two_configured_keys_is_accepted_in_either_header(
    server: ServerProcess,
) -> None:
    for headers in ({"X-API-Key": "key-old"}, {"Authorization": "apikey key-new"}):
        response = await post(
            server, "/api/publish", json={"channel": "k", "data": 1}, headers=headers
        )
        assert response.status_code == 200


# -- idempotency ----------------------------------------------------------------------------


async def test_reused_idempotency_key_with_another_body_gets_the_first_result_and_publishes_once(
    server: ServerProcess,
) -> None:
    channel = unique("idem")
    key = unique("key")
    before = await fetch_stats(server)
    async with both(server, channel) as (raw, v1):
        first = {"channel": channel, "data": {"v": 1}, "idempotency_key": key}
        second = {"channel": channel, "text": "another body", "idempotency_key": key}
        answers = [await post(server, "/api/publish", json=body) for body in (first, second, first)]
        assert [a.json() for a in answers] == [{"result": {}}] * 3
        assert await recv(raw) == '{"v":1}'
        assert await recv(v1) == f'{{"ch":"{channel}","d":{{"v":1}}}}'
        assert await nothing_more(raw) and await nothing_more(v1, 0.05)
        # The key acts per channel (as in Centrifugo): another channel publishes.
        other = unique("idem")
        async with websockets.connect(server.ws(f"/ws/broadcast/{other}")) as elsewhere:
            response = await post(server, "/api/publish", json={**first, "channel": other})
            assert response.status_code == 200
            assert await recv(elsewhere) == '{"v":1}'
    after = await fetch_stats(server)
    assert after["messages"]["published_api"] - before["messages"]["published_api"] == 2


async def test_concurrent_duplicates_publish_once(server: ServerProcess) -> None:
    channel = unique("race")
    key = unique("key")
    async with websockets.connect(server.ws(f"/ws/broadcast/{channel}")) as raw:
        bodies = [{"channel": channel, "text": f"n{i}", "idempotency_key": key} for i in range(20)]
        answers = await asyncio.gather(*(post(server, "/api/publish", json=b) for b in bodies))
        assert {a.status_code for a in answers} == {200}
        assert str(await recv(raw)).startswith("n")
        assert await nothing_more(raw)


async def test_idempotency_key_publishes_once_across_the_workers_of_a_host(
    start_server: StartServer, local_dir: Path
) -> None:
    env = {"FANOUT_API_KEYS": KEYS, "FANOUT_LOCAL_DIR": str(local_dir), **FAST}
    server = start_server(env=env, args=["--workers", "2"])
    assert await eventually(lambda: workers_linked(server, 2), within=20)
    channel = unique("workers")
    key = unique("key")
    pids: set[int] = set()
    async with websockets.connect(server.ws(f"/ws/broadcast/{channel}")) as raw:
        for attempt in range(100):
            # One connection per attempt, so the kernel picks a worker; /stats on the same
            # connection says which one answers it.
            async with httpx.AsyncClient(
                base_url=server.base, limits=httpx.Limits(max_connections=1), timeout=10.0
            ) as client:
                pids.add((await client.get("/stats")).json()["worker"]["pid"])
                body = {"channel": channel, "text": f"attempt {attempt}", "idempotency_key": key}
                response = await client.post("/api/publish", json=body, headers=AUTH)
                assert response.json() == {"result": {}}
            if len(pids) == 2 and attempt >= 3:
                break
        assert len(pids) == 2, "every attempt landed on one worker"
        assert await recv(raw) == "attempt 0"
        assert await nothing_more(raw, 1.0)

    async def counted_once() -> bool:
        stats = await fetch_stats(server)
        return bool(stats["messages"]["published_api"] == 1 and len(stats["workers"]) == 2)

    assert await eventually(counted_once, within=10)
    files = sorted(p.relative_to(local_dir).parts[1] for p in local_dir.glob("sup-*/*"))  # noqa: ASYNC240
    assert "idempotency.sqlite3" in files
    server.stop()
    assert sorted(local_dir.iterdir()) == [], "the last worker removes the file and folder"  # noqa: ASYNC240


async def test_idempotency_key_publishes_once_across_hosts_sharing_redis(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    from redis.asyncio import Redis

    env = {"FANOUT_API_KEYS": KEYS, "FANOUT_BACKEND": redis_server.url, **FAST}
    a, b = start_server(env=env), start_server(env=env)
    channel = unique("hosts")
    key = unique("key")
    redis = Redis.from_url(redis_server.url)
    try:
        async with (
            websockets.connect(a.ws(f"/ws/broadcast/{channel}")) as on_a,
            websockets.connect(b.ws(f"/ws/broadcast/{channel}")) as on_b,
        ):

            async def both_subscribed() -> bool:
                counts = await redis.pubsub_numsub(f"fanout:{channel}")
                return bool(counts and counts[0][1] == 2)

            assert await eventually(both_subscribed, within=10)
            first = {"channel": channel, "text": "first", "idempotency_key": key}
            second = {"channel": channel, "text": "second", "idempotency_key": key}
            assert (await post(a, "/api/publish", json=first)).json() == {"result": {}}
            assert (await post(b, "/api/publish", json=second)).json() == {"result": {}}
            for ws in (on_a, on_b):
                assert await recv(ws) == "first"
            for ws in (on_a, on_b):
                assert await nothing_more(ws)
        ttl = await redis.ttl(f"fanout:idem:{{{channel}:{key}}}")
        assert 250 < ttl <= 300
    finally:
        await redis.aclose()

    async def counted_once() -> bool:  # /stats is cluster-wide: the one publication, on a
        published = [(await fetch_stats(s))["messages"]["published_api"] for s in (a, b)]
        return published == [1, 1]

    assert await eventually(counted_once, within=10)


async def test_publish_is_refused_with_503_while_the_backend_is_down(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    env = {"FANOUT_API_KEYS": KEYS, "FANOUT_BACKEND": redis_server.url, **FAST}
    server = start_server(env=env)
    redis_server.kill()

    async def down() -> bool:
        return bool((await fetch_stats(server))["backend"]["status"] == "down")

    assert await eventually(down, within=10)
    await refused(server, 503, "/api/publish", json={"channel": "c", "data": 1})
    await refused(server, 503, "/api/broadcast", json={"channels": ["c"], "data": 1})
    await assert_still_serving(server)


# -- Centrifugo's Python SDK ----------------------------------------------------------------


async def test_centrifugo_python_client_publishes_and_broadcasts_to_websocket_subscribers(
    server: ServerProcess,
) -> None:
    from cent import BroadcastRequest, Client, PublishRequest

    client = Client(api_url=f"{server.base}/api", api_key=KEY)
    channel, other = unique("cent"), unique("cent")
    async with both(server, channel) as (raw, v1), both(server, other) as (raw2, _):
        result = await asyncio.to_thread(
            client.publish, PublishRequest(channel=channel, data={"from": "cent"})
        )
        assert (result.offset, result.epoch) == (0, "")
        assert json.loads(await recv(raw)) == {"from": "cent"}
        assert json.loads(await recv(v1)) == {"ch": channel, "d": {"from": "cent"}}
        request = BroadcastRequest(channels=[channel, other], data=[1], idempotency_key="c1")
        broadcast = await asyncio.to_thread(client.broadcast, request)
        assert [r.error for r in broadcast.responses] == [None, None]
        assert await recv(raw) == "[1]" and await recv(raw2) == "[1]"
