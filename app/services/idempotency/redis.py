"""redis://: every worker of every host shares its idempotency keys in Redis.

A claim is ``SET fanout:idem:{key} <pending marker> NX PX <lease>``: atomic, first writer
wins, on every host. The result replaces the marker with ``EX 300`` through a short script
that checks the marker is still this claim's (a claim whose lease ran out may have been
taken over). Keys are hash-tagged so that a Redis Cluster keeps each on one slot.

The store has its own client, not the backend's: the publisher's connection is a queue
that drops while Redis is away, and this one must answer each request or fail it (503).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.services.idempotency.base import PENDING, Claim, IdempotencyUnavailable

PREFIX: Final = "fanout:idem:"
PENDING_MARK: Final = b"\x00pending:"
"""Start of a claim's value; a result is JSON, which never starts with a NUL byte."""
TIMEOUT: Final = 2.0
"""Seconds one Redis call may take before the request fails with 503."""

_COMPLETE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_FAILURES: Final = (RedisError, OSError, TimeoutError)


def redis_key(key: str) -> str:
    """The Redis key of an idempotency key: ``fanout:idem:{key}``."""
    return f"{PREFIX}{{{key}}}"


class RedisIdempotencyStore:
    """Keys shared through Redis; see the module documentation."""

    name = "redis"

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Redis | None = None
        self._prefix = PENDING_MARK + f"{os.getpid()}-".encode()

    async def start(self) -> None:
        """Make the client; it connects on the first call."""
        self._client = Redis.from_url(
            self._url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )

    async def stop(self) -> None:
        """Close the client."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_FAILURES):
                await client.aclose()

    async def claim(self, key: str, lease: float) -> Claim:
        """Take ``key`` if it is free or expired; see IdempotencyStore."""
        client = self._require()
        name = redis_key(key)
        token = self._prefix + uuid.uuid4().hex.encode()
        try:
            if await client.set(name, token, nx=True, px=max(1, int(lease * 1000))):
                return Claim(token=token.decode("latin-1"))
            value = await client.get(name)
        except _FAILURES as exc:
            raise IdempotencyUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        if isinstance(value, str):  # a client made with decode_responses; not this one
            value = value.encode()
        if value is None or value.startswith(PENDING_MARK):
            return PENDING  # held, or expired since the SET: the caller looks again
        return Claim(result=value)

    async def complete(self, key: str, token: str, result: bytes, ttl: float) -> None:
        """Keep ``result`` for ``ttl`` seconds if ``token`` still holds ``key``."""
        args = (token.encode("latin-1"), result, max(1, int(ttl)))
        await self._script(_COMPLETE, key, args)

    async def release(self, key: str, token: str) -> None:
        """Forget ``key`` if ``token`` still holds it."""
        await self._script(_RELEASE, key, (token.encode("latin-1"),))

    def status(self) -> dict[str, object]:
        """Name only: the backend reports Redis's health."""
        return {"name": self.name}

    def _require(self) -> Redis:
        if self._client is None:
            raise IdempotencyUnavailable("idempotency store not started")
        return self._client

    async def _script(self, script: str, key: str, args: tuple[bytes | int, ...]) -> None:
        client = self._require()
        try:
            await client.eval(script, 1, redis_key(key), *args)
        except _FAILURES as exc:
            raise IdempotencyUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
