"""Tokens for Fanout, signed with PyJWT: what your backend hands its users.

The server checks them with ``FANOUT_TOKEN_HMAC_SECRET`` (HS256) or
``FANOUT_TOKEN_PUBLIC_KEY`` (RS256/ES256), and ``FANOUT_TOKEN_AUDIENCE`` /
``FANOUT_TOKEN_ISSUER`` when set: sign with the matching secret or private key, audience
and issuer. ``secret=None`` reads ``FANOUT_TOKEN_HMAC_SECRET`` from the environment, so a
backend that shares the server's settings needs no argument.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

SECRET_VARIABLE = "FANOUT_TOKEN_HMAC_SECRET"
"""Where ``secret=None`` looks for the HS256 secret."""


def connection_token(
    sub: str,
    ttl: float | None = 3600,
    caps: Sequence[Mapping[str, Any]] | None = None,
    info: Any = None,
    channels: Sequence[str] | None = None,
    *,
    secret: str | bytes | None = None,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """A connection token for user ``sub`` (``""`` is anonymous), valid ``ttl`` seconds
    (None: no ``exp``, it never expires).

    ``caps``: rights beyond the channel rules,
    ``[{"match": ["chat.*"], "allow": ["sub", "pub", "presence", "history"]}]``.
    ``info``: public JSON shown to others in presence and join/leave events.
    ``channels``: subscribed at connect. ``secret``: the HMAC secret, or the PEM private
    key for RS256/ES256 (None: ``$FANOUT_TOKEN_HMAC_SECRET``). ``claims``: any more.
    """
    body: dict[str, Any] = {"sub": sub}
    if caps is not None:
        body["caps"] = [dict(cap) for cap in caps]
    if info is not None:
        body["info"] = info
    if channels is not None:
        body["channels"] = list(channels)
    return _sign(body, ttl, secret, algorithm, audience, issuer, claims)


def subscription_token(
    sub: str,
    channel: str,
    ttl: float | None = 3600,
    info: Any = None,
    *,
    secret: str | bytes | None = None,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """A subscription token: user ``sub`` (the connection's user, ``""`` if anonymous) may
    subscribe to ``channel`` (whose rule is ``subscribe = "token"``) for ``ttl`` seconds."""
    body: dict[str, Any] = {"sub": sub, "channel": channel}
    if info is not None:
        body["info"] = info
    return _sign(body, ttl, secret, algorithm, audience, issuer, claims)


def _sign(
    body: dict[str, Any],
    ttl: float | None,
    secret: str | bytes | None,
    algorithm: str,
    audience: str | None,
    issuer: str | None,
    claims: Mapping[str, Any] | None,
) -> str:
    if secret is None:
        secret = os.environ.get(SECRET_VARIABLE)
        if not secret:
            raise ValueError(f"no secret given and {SECRET_VARIABLE} is not set")
    now = int(time.time())
    body["iat"] = now
    if ttl is not None:
        body["exp"] = now + max(1, round(ttl))
    if audience is not None:
        body["aud"] = audience
    if issuer is not None:
        body["iss"] = issuer
    if claims:
        body.update(claims)
    return jwt.encode(body, secret, algorithm=algorithm)
