"""Tokens and channel rules on real sockets: who may connect, subscribe and publish."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.clients import assert_still_serving
from tests.support.protocol import V1Client, v1_client
from tests.support.servers import ServerProcess
from tests.support.stats import fetch_stats
from tests.support.tokens import SECRET, connection_token, sign, subscription_token

RULES = """
[[channels]]
match = "public.*"
subscribe = "any"
publish = "none"

[[channels]]
match = "chat.*"
subscribe = "authenticated"
publish = "subscribers"

[[channels]]
match = "secret.*"
subscribe = "token"
publish = "subscribers"

[[channels]]
match = "locked.*"
subscribe = "none"
publish = "none"
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """A server with the rules above and an HS256 secret."""
    folder = Path(tempfile.mkdtemp(prefix="fanout-auth-"))
    rules = folder / "fanout.toml"
    rules.write_text(RULES)
    proc = ServerProcess({"FANOUT_CONFIG": str(rules), "FANOUT_TOKEN_HMAC_SECRET": SECRET}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def strict() -> Iterator[ServerProcess]:
    """A server where every socket needs a token (FANOUT_REQUIRE_AUTH=true)."""
    proc = ServerProcess(
        {"FANOUT_TOKEN_HMAC_SECRET": SECRET, "FANOUT_REQUIRE_AUTH": "true"}
    ).start()
    yield proc
    proc.stop()


async def _closed_with(client: V1Client) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await client.ws.recv()
    return client.ws.close_code


async def test_connect_with_a_token_names_the_user_and_its_ttl(server: ServerProcess) -> None:
    async with v1_client(server) as client:
        reply = await client.call("connect", token=connection_token("42", ttl=600))
    res = reply["res"]
    assert res["user"] == "42" and 590 <= res["ttl"] <= 600 and res["client"]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (sign({"sub": "1"}, key="a-different-secret-that-is-long-enough"), 4500),
        (connection_token("1", ttl=-60), 4001),
        ("garbage", 4500),
    ],
)
async def test_a_bad_connect_closes_the_socket(
    server: ServerProcess, token: str, code: int
) -> None:
    async with v1_client(server) as client:
        await client.ws.send(json.dumps({"id": 1, "op": "connect", "token": token}))
        assert await _closed_with(client) == code
    assert f"protocol error {code}" in server.log()
    await assert_still_serving(server)


async def test_a_token_in_the_url_is_checked_before_accept(server: ServerProcess) -> None:
    bad = sign({"sub": "1"}, key="a-different-secret-that-is-long-enough")
    before = await fetch_stats(server)
    for path in (f"/ws/broadcast/room?token={bad}", f"/ws?proto=fanout.v1&token={bad}"):
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(server.ws(path)):
                pass
        assert info.value.response.status_code == 401
    after = await fetch_stats(server)
    assert after["rejected"]["token"] - before["rejected"].get("token", 0) == 2
    good = connection_token("8")
    async with websockets.connect(server.ws(f"/ws?proto=fanout.v1&token={good}")) as ws:
        client = V1Client(ws)
        assert (await client.call("sub", ch="chat.room"))["res"] == {}  # authenticated by URL
    log = server.log()
    assert bad not in log and good not in log and "token=[redacted]" in log


async def test_rules_decide_who_subscribes_and_publishes(server: ServerProcess) -> None:
    async with v1_client(server) as anonymous, v1_client(server) as user:
        await user.call("connect", token=connection_token("5"))
        # public.*: anyone subscribes, nobody publishes from a socket.
        assert (await anonymous.call("sub", ch="public.news"))["res"] == {}
        assert (await anonymous.call("pub", ch="public.news", text="x"))["error"]["code"] == 403
        # chat.*: only with a token; subscribers publish.
        assert (await anonymous.call("sub", ch="chat.lobby"))["error"]["code"] == 401
        assert (await user.call("sub", ch="chat.lobby"))["res"] == {}
        assert (await user.call("pub", ch="chat.lobby", text="hi"))["res"] == {}
        assert (await user.push_json())["s"] == "hi"
        # secret.*: a subscription token for that channel and that user.
        assert (await user.call("sub", ch="secret.a"))["error"]["code"] == 401
        wrong_channel = subscription_token("5", "secret.b")
        assert (await user.call("sub", ch="secret.a", token=wrong_channel))["error"]["code"] == 403
        other_user = subscription_token("6", "secret.a")
        assert (await user.call("sub", ch="secret.a", token=other_user))["error"]["code"] == 403
        assert (await user.call("sub", ch="secret.a", token=subscription_token("5", "secret.a")))[
            "res"
        ] == {}
        # locked.*: nobody, whatever the token.
        assert (await user.call("sub", ch="locked.x"))["error"]["code"] == 403


async def test_a_user_channel_is_its_owners_alone(server: ServerProcess) -> None:
    async with v1_client(server) as owner, v1_client(server) as other:
        await owner.call("connect", token=connection_token("42"))
        await other.call("connect", token=connection_token("7"))
        assert (await owner.call("sub", ch="inbox#42"))["res"] == {}
        assert (await other.call("sub", ch="inbox#42"))["error"]["code"] == 403


async def test_capabilities_grant_beyond_the_rules_and_channels_subscribe_at_connect(
    server: ServerProcess,
) -> None:
    caps = [{"match": ["locked.*"], "allow": ["sub", "pub"]}]
    token = connection_token("9", caps=caps, channels=["public.feed"])
    async with v1_client(server) as client:
        await client.call("connect", token=token)
        assert (await client.call("sub", ch="locked.vault"))["res"] == {}
        assert (await client.call("pub", ch="locked.vault", text="in"))["res"] == {}
        assert (await client.push_json()) == {"ch": "locked.vault", "s": "in"}
        assert (await client.call("sub", ch="public.feed"))["error"]["code"] == 409  # held


async def test_raw_sockets_obey_the_rules(server: ServerProcess) -> None:
    before = await fetch_stats(server)
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(server.ws("/ws/broadcast/chat.room")):
            pass
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(server.ws("/ws/broadcast/locked.room")):
            pass
    assert info.value.response.status_code == 403
    token = connection_token("3")
    async with websockets.connect(server.ws(f"/ws/broadcast/chat.room?token={token}")) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
    # public.*: a raw socket may listen, and is closed with 4503 when it publishes.
    async with websockets.connect(server.ws("/ws/broadcast/public.news")) as ws:
        await ws.send("not allowed")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4503
    after = await fetch_stats(server)
    assert after["rejected"]["forbidden"] - before["rejected"].get("forbidden", 0) == 1
    assert after["closes"]["4503"] - before["closes"].get("4503", 0) == 1
    await assert_still_serving(server)


async def test_an_expired_token_closes_with_4001_unless_refreshed(server: ServerProcess) -> None:
    # Expired 4 s ago: inside the 5 s leeway for about one more second.
    async with v1_client(server) as lapsing, v1_client(server) as refreshed:
        await lapsing.call("connect", token=connection_token("1", ttl=-4))
        await refreshed.call("connect", token=connection_token("2", ttl=-4))
        reply = await refreshed.call("refresh", token=connection_token("2", ttl=600))
        assert 590 <= reply["res"]["ttl"] <= 600
        other_user = await refreshed.call("refresh", token=connection_token("3", ttl=600))
        assert other_user["error"]["code"] == 403
        assert await _closed_with(lapsing) == 4001
        assert (await refreshed.call("ping", within=3))["res"] == {}  # still open


async def test_require_auth_refuses_anonymous_sockets(strict: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(strict.ws("/ws/broadcast")):
            pass
    assert info.value.response.status_code == 401
    async with v1_client(strict) as client:
        await client.ws.send('{"id":1,"op":"ping"}')  # anything but connect
        assert await _closed_with(client) == 4500
    async with v1_client(strict) as client:
        assert (await client.call("connect", token=connection_token("4")))["res"]["user"] == "4"
        assert (await client.call("sub", ch="any.thing"))["res"] == {}
    token = connection_token("4")
    async with websockets.connect(strict.ws(f"/ws/echo?token={token}")) as ws:
        await ws.send("ok")
        assert await ws.recv() == "ok"


async def test_a_raw_socket_with_an_expiring_token_is_closed_with_4001(
    server: ServerProcess,
) -> None:
    token = connection_token("11", ttl=-4)
    async with websockets.connect(server.ws(f"/ws/broadcast/chat.room?token={token}")) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4001
