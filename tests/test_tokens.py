"""TokenVerifier: real JWTs, good and bad, and the cache that spares a reconnect storm."""

from __future__ import annotations

import time

import jwt
import pytest

from app.services.tokens import Identity, TokenError, TokenVerifier
from tests.support.tokens import (
    SECRET,
    KeyPair,
    connection_token,
    sign,
    subscription_token,
    unsigned_token,
)


def verifier(**options: str) -> TokenVerifier:
    return TokenVerifier(hmac_secret=options.pop("secret", SECRET), **options)


def test_a_good_token_says_who_and_what() -> None:
    caps = [{"match": ["chat.*"], "allow": ["sub", "pub"]}]
    token = connection_token("42", info={"name": "Ada"}, channels=["inbox#42"], caps=caps)
    identity = verifier().connection(token)
    assert isinstance(identity, Identity)
    assert identity.user == "42" and identity.info == {"name": "Ada"}
    assert identity.channels == ("inbox#42",)
    assert identity.may("pub", "chat.lobby") and not identity.may("pub", "news")
    assert identity.may("sub", "chat.x") and not identity.may("history", "chat.x")
    ttl = identity.ttl()
    assert ttl is not None and 3590 <= ttl <= 3600


def test_an_expired_token_is_refused_as_expired_but_the_leeway_is_honoured() -> None:
    with pytest.raises(TokenError) as info:
        verifier().connection(connection_token("1", ttl=-10))
    assert info.value.expired
    assert verifier().connection(connection_token("1", ttl=-2)).user == "1"  # 5 s leeway


@pytest.mark.parametrize(
    ("token", "options"),
    [
        (sign({"sub": "1"}, key="another-secret-entirely-but-long-enough"), {}),
        (connection_token("1", aud="other"), {"audience": "fanout"}),
        (connection_token("1"), {"audience": "fanout"}),  # no aud at all
        (connection_token("1", iss="mallory"), {"issuer": "auth.example"}),
        (unsigned_token({"sub": "1"}), {}),
        (sign({"user": "1"}), {}),  # no sub
        (sign({"sub": 1}), {}),  # sub not a string
        (connection_token("1", caps=[{"match": ["*"], "allow": ["admin"]}]), {}),
        (subscription_token("1", "secret.room"), {}),  # a subscription token cannot connect
        ("not.a.jwt", {}),
    ],
)
def test_a_bad_token_is_refused_as_invalid(token: str, options: dict[str, str]) -> None:
    with pytest.raises(TokenError) as info:
        verifier(**options).connection(token)
    assert not info.value.expired and info.value.reason


def test_audience_and_issuer_pass_when_they_match() -> None:
    token = connection_token("7", aud="fanout", iss="auth.example")
    assert verifier(audience="fanout", issuer="auth.example").connection(token).user == "7"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_tokens_and_no_algorithm_confusion(algorithm: str) -> None:
    keys = KeyPair(algorithm)
    check = TokenVerifier(public_key=keys.public_pem)
    assert check.connection(keys.sign({"sub": "9", "ttl": 60})).user == "9"
    # The public key used as an HMAC secret (the classic confusion attack) is refused.
    forged = jwt.encode({"sub": "9"}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError):
        check.connection(forged)
    with pytest.raises(TokenError):
        TokenVerifier(public_key=keys.public_pem).connection(connection_token("9"))


def test_a_subscription_token_names_its_channel_and_user() -> None:
    grant = verifier().subscription(subscription_token("5", "secret.room"))
    assert (grant.user, grant.channel) == ("5", "secret.room")
    with pytest.raises(TokenError):
        verifier().subscription(connection_token("5"))  # no channel claim


def test_no_key_configured_refuses_every_token() -> None:
    assert not TokenVerifier().enabled
    with pytest.raises(TokenError):
        TokenVerifier().connection(connection_token("1"))


def test_a_verified_token_is_not_checked_again_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real = jwt.decode

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)  # tokens.py looks it up at each call
    check = verifier()
    token = connection_token("1", ttl=-3)  # inside the leeway, for 2 more seconds
    for _ in range(100):
        check.connection(token)
    assert calls == 1
    later = time.time() + 10
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(TokenError) as info:
        check.connection(token)  # the cached entry expired too
    assert info.value.expired
