"""redis://: every worker of every host shares the history in Redis Streams.

Per channel, two keys in one hash slot (so they work on a Redis Cluster): the stream
``fanout:{<channel>}:h``, one entry per kept publication, its id ``<offset>-0`` and its
fields ``t`` (Redis's time of the append, ms), ``k`` (kind) and ``d`` (payload); and the
hash ``fanout:{<channel>}:m`` with ``e`` (epoch) and ``t`` (newest offset).

An append is one Lua script, so it is atomic on the server: the epoch is the hash's, or
the random one the caller sends when the hash has none (a new channel, or one lost to
``FLUSHALL``, eviction or expiry: then any leftover stream is deleted, since its entries
belong to a lost epoch); ``HINCRBY`` takes the next offset; ``XADD`` with ``MAXLEN =
size`` keeps exactly ``size`` entries; the entries older than ``ttl`` are trimmed from
the head; both keys expire ``ttl`` after the append. A read is one script too (the
position and the ``XRANGE`` above ``after`` from one instant), and on a channel without a
hash it makes the hash, with the caller's epoch, as the first touch. Retention is the
other stores': a publication expires ``ttl`` after its own append, the channel (epoch
too) ``ttl`` after its newest append. Times are Redis's (``TIME``), one clock for every
host.

The store has its own client, not the backend's (as the idempotency store): the
publisher's connection is a queue that drops while Redis is away, and this one must answer
each call or fail it. No call is retried (a retried append could be numbered twice), and
each is bounded by ``timeout`` as a whole: a call that fails raises HistoryUnavailable. A
call that timed out may still have been applied by a Redis that was only slow: an append
then leaves a publication nobody was told about (its offset is not reused). Calls run on up
to :data:`MAX_CONNECTIONS` connections at once, so appends issued concurrently are numbered
in no particular order among themselves: a publisher whose order matters awaits each append
before the next (as it must with every store).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from app.services.history.memory import new_epoch
from app.services.history.store import Entry, HistoryUnavailable, Position, Retention

TIMEOUT: Final = 2.0
"""Seconds one call may take by default (the factory passes FANOUT_REDIS_TIMEOUT)."""
MAX_CONNECTIONS: Final = 16
"""Connections to Redis a worker's store opens at most."""

# Shared by both scripts. Entries are appended in time order, so the expired ones are a
# prefix: look at the head (one entry, then growing batches) and trim up to the first live
# one. Fields are written in the order t, k, d: an entry's fields[2] is its time.
_PRELUDE: Final = """
local stream, meta = KEYS[1], KEYS[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function offset_of(id)
    return tonumber(string.match(id, '^%d+'))
end

local function drop_expired(cutoff)
    local batch = 1
    while true do
        local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', batch)
        local n = #head
        if n == 0 then return end
        for i = 1, n do
            if tonumber(head[i][2][2]) > cutoff then
                if i > 1 then redis.call('XTRIM', stream, 'MINID', head[i][1]) end
                return
            end
        end
        redis.call('XTRIM', stream, 'MINID', (offset_of(head[n][1]) + 1) .. '-0')
        if n < batch then return end
        batch = math.min(batch * 8, 512)
    end
end
"""
# KEYS: stream, meta. ARGV: epoch if new, kind, data, size, ttl in ms (0: none).
# Returns {offset, epoch}.
_APPEND: Final = (
    _PRELUDE
    + """
local size, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
    epoch = ARGV[1]
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'e', epoch, 't', 0)
end
local top = redis.call('HINCRBY', meta, 't', 1)
redis.call('XADD', stream, 'MAXLEN', size, top .. '-0', 't', now, 'k', ARGV[2], 'd', ARGV[3])
if ttl > 0 then
    drop_expired(now - ttl)
    redis.call('PEXPIRE', stream, ttl)
    redis.call('PEXPIRE', meta, ttl)
else
    redis.call('PERSIST', stream)
    redis.call('PERSIST', meta)
end
return {top, epoch}
"""
)
# KEYS: stream, meta. ARGV: epoch if new, after, limit (-1: all), ttl in ms (0: none).
# Returns {top, epoch} or {top, epoch, packed}: the entries packed into one string, each
# "<offset> <kind> <length> <data>" (one bulk reply parses far faster than 3 per entry).
_READ: Final = (
    _PRELUDE
    + """
local after, limit, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', meta, 'e', 't')
local epoch = state[1]
if not epoch then
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'e', ARGV[1], 't', 0)
    if ttl > 0 then redis.call('PEXPIRE', meta, ttl) end
    return {0, ARGV[1]}
end
local top = tonumber(state[2]) or 0
local result = {top, epoch}
if limit == 0 or after >= top then return result end
if ttl > 0 then drop_expired(now - ttl) end
local range
if limit < 0 then
    range = redis.call('XRANGE', stream, (after + 1) .. '-0', '+')
else
    range = redis.call('XRANGE', stream, (after + 1) .. '-0', '+', 'COUNT', limit)
end
local parts = {}
for i = 1, #range do
    local fields = range[i][2]
    local data = fields[6]
    parts[i] = offset_of(range[i][1]) .. ' ' .. fields[4] .. ' ' .. #data .. ' ' .. data
end
result[3] = table.concat(parts)
return result
"""
)
_FAILURES: Final = (RedisError, OSError, TimeoutError)
_KINDS: Final = {b"s": "s", b"d": "d", b"b": "b"}


def stream_key(channel: str) -> str:
    """The Redis key of a channel's stream: ``fanout:{<channel>}:h``."""
    return f"fanout:{{{channel}}}:h"


def meta_key(channel: str) -> str:
    """The Redis key of a channel's epoch and newest offset: ``fanout:{<channel>}:m``."""
    return f"fanout:{{{channel}}}:m"


class RedisHistoryStore:
    """History shared through Redis Streams; see the module documentation."""

    name = "redis"

    def __init__(self, url: str, *, timeout: float = TIMEOUT) -> None:
        self._url = url
        self._timeout = timeout
        self._client: Redis | None = None
        self._append_script: AsyncScript | None = None
        self._read_script: AsyncScript | None = None

    async def start(self) -> None:
        """Make the client; it connects on the first call."""
        # No retries inside redis-py: a call that fails is failed at once (503), never sent
        # twice. A connection found closed in the pool (Redis restarted) is replaced before
        # use by redis-py itself, so the first call after a restart succeeds.
        # At most MAX_CONNECTIONS at once; a burst beyond waits for one (within the call's
        # timeout) instead of opening a connection per concurrent call.
        pool = BlockingConnectionPool.from_url(
            self._url,
            max_connections=MAX_CONNECTIONS,
            timeout=self._timeout,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
        )
        client = Redis.from_pool(pool)
        self._append_script = client.register_script(_APPEND)
        self._read_script = client.register_script(_READ)
        self._client = client

    async def stop(self) -> None:
        """Close the client."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_FAILURES):
                await client.aclose()

    async def append(self, channel: str, kind: str, data: bytes, retention: Retention) -> Position:
        """Keep one publication under the channel's next offset; see HistoryStore."""
        args = (new_epoch(), kind, data, max(retention.size, 0), _ms(retention.ttl))
        reply = await self._call(self._append_script, channel, args)
        return Position(int(reply[0]), _text(reply[1]))

    async def read(
        self, channel: str, after: int, limit: int | None, retention: Retention
    ) -> tuple[Position, list[Entry]]:
        """The channel's position and what it keeps above ``after``; see HistoryStore."""
        count = -1 if limit is None else max(limit, 0)
        args = (new_epoch(), max(after, 0), count, _ms(retention.ttl))
        reply = await self._call(self._read_script, channel, args)
        position = Position(int(reply[0]), _text(reply[1]))
        return position, _unpack(reply[2]) if len(reply) > 2 else []

    def status(self) -> dict[str, object]:
        """Name only: the backend reports Redis's health."""
        return {"name": self.name}

    async def _call(
        self, script: AsyncScript | None, channel: str, args: tuple[str | int | bytes, ...]
    ) -> Any:
        if self._client is None or script is None:
            raise HistoryUnavailable("history store not started")
        try:
            async with asyncio.timeout(self._timeout):
                return await script(keys=(stream_key(channel), meta_key(channel)), args=args)
        except _FAILURES as exc:
            raise HistoryUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc


def _unpack(packed: bytes) -> list[Entry]:
    """The entries of the read script's packed string."""
    entries = []
    kinds = _KINDS
    end = len(packed)
    i = 0
    while i < end:
        space = packed.index(b" ", i)
        offset = int(packed[i:space])
        kind_end = packed.index(b" ", space + 1)
        kind = packed[space + 1 : kind_end]
        length_end = packed.index(b" ", kind_end + 1)
        start = length_end + 1
        i = start + int(packed[kind_end + 1 : length_end])
        entries.append(Entry(offset, kinds.get(kind) or kind.decode(), packed[start:i]))
    return entries


def _ms(ttl: float) -> int:
    """A ttl in whole milliseconds, at least 1 when there is one; 0: none."""
    return max(1, math.ceil(ttl * 1000)) if ttl > 0 else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
