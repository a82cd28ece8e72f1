"""fanout_sdk.tokens: tokens PyJWT verifies, and that a real server accepts."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fanout_sdk import Client, CommandError, connection_token, subscription_token
from tests.support.servers import StartServer
from tests.support.tokens import SECRET


def test_a_connection_token_carries_every_claim_and_verifies() -> None:
    caps = [{"match": ["chat.*"], "allow": ["sub", "pub"]}]
    token = connection_token(
        "42",
        60,
        caps=caps,
        info={"name": "Ada"},
        channels=["inbox#42"],
        secret=SECRET,
        audience="fanout",
        issuer="backend",
    )
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="fanout", issuer="backend")
    assert claims["sub"] == "42" and claims["caps"] == caps
    assert claims["info"] == {"name": "Ada"} and claims["channels"] == ["inbox#42"]
    assert 58 <= claims["exp"] - time.time() <= 61  # exp is whole seconds, rounded down
    with pytest.raises(jwt.InvalidSignatureError):
        other = "another-secret-of-thirty-two-bytes!"
        jwt.decode(token, other, algorithms=["HS256"], audience="fanout")


def test_a_token_without_ttl_never_expires_and_the_secret_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FANOUT_TOKEN_HMAC_SECRET", SECRET)
    token = connection_token("1", None)
    assert "exp" not in jwt.decode(token, SECRET, algorithms=["HS256"])
    monkeypatch.delenv("FANOUT_TOKEN_HMAC_SECRET")
    with pytest.raises(ValueError, match="FANOUT_TOKEN_HMAC_SECRET"):
        connection_token("1", 60)


def test_a_subscription_token_names_user_and_channel_and_signs_with_es256() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token = subscription_token("7", "vip.room", 30, secret=pem, algorithm="ES256")
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"])
    assert claims["sub"] == "7" and claims["channel"] == "vip.room"


RULES = """
[[channels]]
match = "vip.*"
subscribe = "token"
[[channels]]
match = "news.*"
subscribe = "any"
publish = "none"
"""


async def test_the_server_accepts_both_tokens_and_grants_what_caps_allow(
    start_server: StartServer, tmp_path: Path
) -> None:
    rules = tmp_path / "fanout.toml"
    rules.write_text(RULES)
    server = start_server(env={"FANOUT_TOKEN_HMAC_SECRET": SECRET, "FANOUT_CONFIG": str(rules)})
    caps = [{"match": ["news.*"], "allow": ["pub"]}]
    token = connection_token("7", 60, caps=caps, secret=SECRET)
    async with Client(server.ws("/ws"), token=token) as client:
        assert client.user == "7"
        with pytest.raises(CommandError) as refused:
            await client.subscribe("vip.room")  # rule: a subscription token is needed
        assert refused.value.code in (401, 403)
        vip = await client.subscribe(
            "vip.room", token=subscription_token("7", "vip.room", 60, secret=SECRET)
        )
        assert vip.subscribed
        news = await client.subscribe("news.today")
        await client.publish("news.today", "by capability")  # the rule says nobody may
        assert (await news.get(within=5)).data == "by capability"
    async with Client(server.ws("/ws")) as anonymous:
        await anonymous.subscribe("news.today")
        with pytest.raises(CommandError) as forbidden:
            await anonymous.publish("news.today", "no caps")
        assert forbidden.value.code in (401, 403)
