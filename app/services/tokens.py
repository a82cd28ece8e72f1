"""Tokens: JWTs (PyJWT) that say who a connection is and what it may do.

A connection token (``connect``, or ``?token=`` on any socket) carries ``sub`` (the user
id), ``exp``, ``info`` (public JSON shown in presence), ``channels`` (subscribed at
connect) and ``caps`` (rights beyond the channel rules). A subscription token (for a rule
``subscribe = "token"``) carries ``sub``, ``channel``, ``exp`` and ``info``. Both are
checked with one key: an HS256 secret, or an RS256/ES256 public key; audience and issuer
when configured; 5 seconds of leeway on ``exp``. ``alg: none`` and any algorithm other
than the key's are refused by PyJWT because the allowed list never contains them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jwt

LEEWAY = 5.0
"""Seconds a token is still accepted after its ``exp`` (clock skew between hosts)."""

CACHE_SIZE = 10_000
"""Verified tokens remembered, so a reconnect storm does not check each signature again."""

CAPABILITIES = frozenset({"sub", "pub", "presence", "history"})


class TokenError(Exception):
    """A token that cannot be used: ``expired`` tells the client to get a new one (4001),
    anything else is invalid (4500, or HTTP 401 at the handshake)."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


@dataclass(frozen=True, slots=True)
class Capability:
    """``{"match": [globs], "allow": [rights]}``: rights on the channels the globs match."""

    match: tuple[str, ...]
    allow: frozenset[str]

    def grants(self, right: str, channel: str) -> bool:
        """Whether this capability gives ``right`` on ``channel``."""
        return right in self.allow and any(fnmatchcase(channel, glob) for glob in self.match)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is, from its connection token."""

    user: str
    exp: float | None
    info: Any = None
    channels: tuple[str, ...] = ()
    caps: tuple[Capability, ...] = ()

    def may(self, right: str, channel: str) -> bool:
        """Whether a capability of the token grants ``right`` on ``channel``."""
        return any(cap.grants(right, channel) for cap in self.caps)

    def ttl(self, now: float | None = None) -> int | None:
        """Whole seconds until ``exp`` (None for a token that does not expire)."""
        if self.exp is None:
            return None
        return max(0, int(self.exp - (time.time() if now is None else now)))


@dataclass(frozen=True, slots=True)
class SubscriptionGrant:
    """What a subscription token allows: ``user`` may subscribe to ``channel``."""

    user: str
    channel: str
    exp: float | None
    info: Any = None


class TokenVerifier:
    """Checks tokens with the configured key; remembers the ones it verified until ``exp``."""

    def __init__(
        self,
        *,
        hmac_secret: str = "",
        public_key: str = "",
        audience: str = "",
        issuer: str = "",
    ) -> None:
        self._key: Any
        if hmac_secret:
            self._key, self._algorithms = hmac_secret, ["HS256"]
        elif public_key:
            pem = public_key if "-----BEGIN" in public_key else Path(public_key).read_text()
            self._key, self._algorithms = pem, ["RS256", "ES256"]
        else:
            self._key, self._algorithms = None, []
        self._audience = audience or None
        self._issuer = issuer or None
        self._cache: dict[str, Identity | SubscriptionGrant] = {}

    @property
    def enabled(self) -> bool:
        """Whether a key is configured; without one every token is refused."""
        return self._key is not None

    def connection(self, token: str) -> Identity:
        """The identity in a connection token; TokenError if it cannot be used."""
        cached = self._cached(token)
        if isinstance(cached, Identity):
            return cached
        claims = self._decode(token)
        if "channel" in claims:
            raise TokenError("a subscription token cannot connect")
        identity = Identity(
            user=_user(claims),
            exp=_exp(claims),
            info=claims.get("info"),
            channels=_strings(claims.get("channels", []), "channels"),
            caps=_caps(claims.get("caps", [])),
        )
        self._remember(token, identity)
        return identity

    def subscription(self, token: str) -> SubscriptionGrant:
        """The grant in a subscription token; TokenError if it cannot be used."""
        cached = self._cached(token)
        if isinstance(cached, SubscriptionGrant):
            return cached
        claims = self._decode(token)
        channel = claims.get("channel")
        if not isinstance(channel, str) or not channel:
            raise TokenError("a subscription token needs a channel claim")
        grant = SubscriptionGrant(_user(claims), channel, _exp(claims), claims.get("info"))
        self._remember(token, grant)
        return grant

    def _cached(self, token: str) -> Identity | SubscriptionGrant | None:
        cached = self._cache.get(token)
        if cached is not None and cached.exp is not None and time.time() > cached.exp + LEEWAY:
            del self._cache[token]
            raise TokenError("token expired", expired=True)
        return cached

    def _remember(self, token: str, value: Identity | SubscriptionGrant) -> None:
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()  # a bound, not an LRU: a miss only costs a signature check
        self._cache[token] = value

    def _decode(self, token: str) -> dict[str, Any]:
        if self._key is None:
            raise TokenError("tokens are not configured on this server")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY,
                options={"require": ["sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired", expired=True) from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        return claims


def _user(claims: dict[str, Any]) -> str:
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise TokenError("sub must be a string")
    return sub


def _exp(claims: dict[str, Any]) -> float | None:
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenError(f"{name} must be a list of strings")
    return tuple(value)


def _caps(value: Any) -> tuple[Capability, ...]:
    if not isinstance(value, list):
        raise TokenError("caps must be a list")
    caps = []
    for entry in value:
        if not isinstance(entry, dict):
            raise TokenError("each cap must be an object with match and allow")
        allow = frozenset(_strings(entry.get("allow", []), "caps.allow"))
        unknown = allow - CAPABILITIES
        if unknown:
            raise TokenError(f"unknown capability {sorted(unknown)[0]!r}")
        caps.append(Capability(_strings(entry.get("match", []), "caps.match"), allow))
    return tuple(caps)
