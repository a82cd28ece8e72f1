"""Real JWTs for the tests, signed with PyJWT: HS256 with a secret, RS256/ES256 with keys."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "test-secret-that-is-long-enough-for-hs256"


def sign(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    """``claims`` signed as a JWT (``exp`` in seconds from now when given as ``ttl``)."""
    body = dict(claims)
    ttl = body.pop("ttl", None)
    if ttl is not None:
        body["exp"] = int(time.time() + ttl)
    return jwt.encode(body, key, algorithm=algorithm)


def connection_token(sub: str, ttl: float | None = 3600, **claims: Any) -> str:
    """An HS256 connection token for user ``sub``."""
    return sign({"sub": sub, "ttl": ttl, **claims} if ttl is not None else {"sub": sub, **claims})


def subscription_token(sub: str, channel: str, ttl: float = 3600) -> str:
    """An HS256 subscription token: ``sub`` may subscribe to ``channel``."""
    return sign({"sub": sub, "channel": channel, "ttl": ttl})


def unsigned_token(claims: dict[str, Any]) -> str:
    """A token with ``alg: none``: no signature at all."""
    return jwt.encode(claims, "", algorithm="none")


class KeyPair:
    """A private key to sign with and its public PEM for the server."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._private: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if algorithm == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.public_pem = (
            self._private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(self, claims: dict[str, Any]) -> str:
        """``claims`` signed with the private key."""
        body = dict(claims)
        ttl = body.pop("ttl", None)
        if ttl is not None:
            body["exp"] = int(time.time() + ttl)
        return jwt.encode(body, self._private, algorithm=self.algorithm)
