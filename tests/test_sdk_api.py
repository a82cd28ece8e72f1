"""fanout_sdk.api: the sync and async server API clients against a real two-worker server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout_sdk import ApiError, AsyncFanoutApi, Client, FanoutApi, PublishResult
from tests.support.servers import ServerProcess, StartServer, free_port

API_KEY = "sdk-api-key"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """Two workers: the API request and the subscriber may be served by different ones."""
    proc = ServerProcess({"FANOUT_API_KEYS": API_KEY}, ["--workers", "2"]).start()
    yield proc
    proc.stop()


async def test_a_sync_publish_reaches_a_subscriber(server: ServerProcess) -> None:
    with FanoutApi(server.base, API_KEY) as api:
        async with Client(server.ws("/ws")) as client:
            sub = await client.subscribe("api.sync")
            assert api.publish("api.sync", {"a": [1, 2]}) == PublishResult()
            api.publish("api.sync", text="plain")
            api.publish("api.sync", binary=b"\x01\x02")
            api.publish("api.sync", b64data=base64.b64encode(b"\x03").decode())
            api.publish("api.sync", {"once": True}, idempotency_key="k-1")
            api.publish("api.sync", {"once": True}, idempotency_key="k-1")  # a retry
            api.publish("api.sync", text="end")
            got = [await sub.get(within=5) for _ in range(6)]
    assert got[0].data == {"a": [1, 2]} and got[1].text == "plain"
    assert got[2].binary == b"\x01\x02" and got[3].binary == b"\x03"
    assert got[4].data == {"once": True} and got[5].text == "end"  # the retry published nothing


async def test_an_async_publish_and_broadcast_reach_subscribers(server: ServerProcess) -> None:
    async with (
        AsyncFanoutApi(server.base + "/api", API_KEY) as api,
        Client(server.ws("/ws")) as client,
    ):
        one = await client.subscribe("api.one")
        two = await client.subscribe("api.two")
        await api.publish("api.one", None)
        results = await api.broadcast(["api.one", "api.two", "bad:name"], text="all")
        assert results[:2] == [PublishResult(), PublishResult()]
        assert isinstance(results[2], ApiError) and results[2].code == 400
        first = await one.get(within=5)
        assert first.kind == "json" and first.data is None
        assert (await one.get(within=5)).text == "all"
        assert (await two.get(within=5)).text == "all"


def test_refusals_raise_api_errors_with_code_and_message(server: ServerProcess) -> None:
    with FanoutApi(server.base, API_KEY) as api:
        with pytest.raises(ApiError) as bad:
            api.publish("no:colons", 1)
        assert bad.value.code == 400 and bad.value.message
        with pytest.raises(ApiError) as large:
            api.publish("api.big", text="x" * (1024 * 1024 + 1))
        assert large.value.code == 413
        with pytest.raises(ValueError):
            api.publish("api.x", 1, text="and text")
    with FanoutApi(server.base, "wrong-key") as wrong, pytest.raises(ApiError) as denied:
        wrong.publish("api.x", 1)
    assert denied.value.code == 401


async def test_a_server_without_keys_or_without_an_answer_raises_typed_errors(
    start_server: StartServer,
) -> None:
    keyless = start_server()
    async with AsyncFanoutApi(keyless.base, "any") as api:
        with pytest.raises(ApiError) as disabled:
            await api.publish("x", 1)
        assert disabled.value.code == 403 and "FANOUT_API_KEYS" in disabled.value.message
    nobody = f"http://127.0.0.1:{free_port()}"
    with FanoutApi(nobody, "k", timeout=2.0) as api, pytest.raises(ApiError) as silent:
        api.publish("x", 1)
    assert silent.value.code == 0 and silent.value.__cause__ is not None


def _or_skip_on_404(exc: ApiError, what: str) -> None:
    if exc.code == 404:
        pytest.skip(f"the server has no {what} yet (POST /api/{what} answered 404)")
    raise exc


HISTORY_RULES = """
[[channels]]
match = "hist.*"
publish = "any"
history_size = 10
presence = true
"""


async def test_history_lists_what_was_published(start_server: StartServer, tmp_path: Path) -> None:
    rules = tmp_path / "fanout.toml"
    rules.write_text(HISTORY_RULES)
    server = start_server(env={"FANOUT_API_KEYS": API_KEY, "FANOUT_CONFIG": str(rules)})
    with FanoutApi(server.base, API_KEY) as api:
        try:
            api.history("hist.x", limit=10)
        except ApiError as exc:
            _or_skip_on_404(exc, "history")
        first = api.publish("hist.x", {"n": 1})
        api.publish("hist.x", text="two")
        assert first.offset is not None and first.epoch
        history = api.history("hist.x", limit=10)
        assert [p.offset for p in history.publications][-2:] == [first.offset, first.offset + 1]
        assert history.publications[-1].text == "two"
        after = api.history("hist.x", since=history.position, limit=10)
        assert after.publications == []


async def test_presence_shows_a_connected_subscriber(
    start_server: StartServer, tmp_path: Path
) -> None:
    rules = tmp_path / "fanout.toml"
    rules.write_text(HISTORY_RULES)
    server = start_server(env={"FANOUT_API_KEYS": API_KEY, "FANOUT_CONFIG": str(rules)})
    async with AsyncFanoutApi(server.base, API_KEY) as api:
        try:
            await api.presence_stats("hist.p")
        except ApiError as exc:
            _or_skip_on_404(exc, "presence_stats")
        async with Client(server.ws("/ws")) as client:
            await client.subscribe("hist.p")
            members = await api.presence("hist.p")
            assert client.client_id in members
            stats = await api.presence_stats("hist.p")
            assert stats.clients == 1 and stats.users <= 1  # an anonymous user may count or not
