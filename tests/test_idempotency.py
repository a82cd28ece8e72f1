"""Idempotency stores and the claim-publish-complete flow, without a server.

The SQLite store is tested with two store objects on one file: two connections, as two
workers would hold (the cross-process case itself is in test_api.py, with real workers).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.config import Settings
from app.services.backends.local import LocalBackend
from app.services.backends.memory import MemoryBackend
from app.services.idempotency import (
    IdempotencyConflict,
    IdempotencyStore,
    MemoryIdempotencyStore,
    SqliteIdempotencyStore,
    create_idempotency_store,
    run_once,
)


@pytest.fixture(params=["memory", "sqlite"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[IdempotencyStore, ...]]:
    """Two views of one store: the same object (memory) or two connections to one file."""
    if request.param == "memory":
        store = MemoryIdempotencyStore()
        await store.start()
        yield store, store
        await store.stop()
        return
    with tempfile.TemporaryDirectory(prefix="fanout-idem-") as tmp:
        folder = Path(tmp) / "sup-1"
        first, second = SqliteIdempotencyStore(folder), SqliteIdempotencyStore(folder)
        await first.start()
        await second.start()
        yield first, second
        await first.stop()
        await second.stop()


class Publisher:
    def __init__(self, result: bytes = b"{}") -> None:
        self.calls = 0
        self.result = result

    async def __call__(self) -> bytes:
        self.calls += 1
        return self.result


async def test_the_same_key_publishes_once_and_answers_the_first_result(
    stores: tuple[IdempotencyStore, IdempotencyStore],
) -> None:
    a, b = stores
    first, second = Publisher(b'{"n":1}'), Publisher(b'{"n":2}')
    assert await run_once(a, "ch:k", first) == b'{"n":1}'
    assert await run_once(b, "ch:k", second) == b'{"n":1}'
    assert await run_once(b, "ch:other", second) == b'{"n":2}'
    assert (first.calls, second.calls) == (1, 1)


async def test_a_duplicate_waits_for_a_pending_claim_and_gets_its_result(
    stores: tuple[IdempotencyStore, IdempotencyStore],
) -> None:
    a, b = stores
    claim = await a.claim("ch:k", 5.0)
    assert claim.token is not None
    duplicate = Publisher()
    waiting = asyncio.create_task(run_once(b, "ch:k", duplicate, wait=2.0, poll=0.01))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await a.complete("ch:k", claim.token, b'{"first":true}', 60)
    assert await waiting == b'{"first":true}'
    assert duplicate.calls == 0


async def test_a_duplicate_gives_up_with_a_conflict_while_the_key_stays_pending(
    stores: tuple[IdempotencyStore, IdempotencyStore],
) -> None:
    a, b = stores
    assert (await a.claim("ch:k", 5.0)).token is not None
    duplicate = Publisher()
    with pytest.raises(IdempotencyConflict):
        await run_once(b, "ch:k", duplicate, wait=0.1, poll=0.02)
    assert duplicate.calls == 0


async def test_a_claim_whose_lease_ran_out_is_taken_over(
    stores: tuple[IdempotencyStore, IdempotencyStore],
) -> None:
    a, b = stores
    stale = await a.claim("ch:k", 0.05)  # its worker died before completing
    assert stale.token is not None
    await asyncio.sleep(0.1)
    takeover = Publisher(b'{"second":1}')
    assert await run_once(b, "ch:k", takeover) == b'{"second":1}'
    await a.complete("ch:k", stale.token, b'{"late":1}', 60)  # too late: not its key now
    assert await run_once(a, "ch:k", Publisher()) == b'{"second":1}'


async def test_a_result_expires_after_its_ttl(
    stores: tuple[IdempotencyStore, IdempotencyStore],
) -> None:
    a, b = stores
    assert await run_once(a, "ch:k", Publisher(b"1"), ttl=0.05) == b"1"
    await asyncio.sleep(0.1)
    again = Publisher(b"2")
    assert await run_once(b, "ch:k", again) == b"2"
    assert again.calls == 1


async def test_a_failed_publish_releases_the_key(
    stores: tuple[IdempotencyStore, IdempotencyStore],
) -> None:
    a, b = stores

    async def fail() -> bytes:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await run_once(a, "ch:k", fail)
    retry = Publisher()
    assert await run_once(b, "ch:k", retry, wait=0.1) == b"{}"
    assert retry.calls == 1


async def test_memory_store_stays_within_its_bound() -> None:
    store = MemoryIdempotencyStore(max_entries=100)
    for i in range(1000):
        assert await run_once(store, f"ch:{i}", Publisher()) == b"{}"
    assert store.status()["keys"] <= 100  # type: ignore[operator]
    assert store.evicted >= 900


async def test_sqlite_file_is_removed_by_the_last_store_when_no_worker_socket_is_left() -> None:
    with tempfile.TemporaryDirectory(prefix="fanout-idem-") as tmp:
        folder = Path(tmp) / "sup-1"
        first, second = SqliteIdempotencyStore(folder), SqliteIdempotencyStore(folder)
        for store in (first, second):
            await store.start()
            await run_once(store, "ch:k", Publisher())
        sibling = folder / "4242.sock"
        sibling.touch()
        await first.stop()
        assert first.path.exists(), "a sibling is still there"
        sibling.unlink()
        await second.stop()
        assert not folder.exists()


def test_store_follows_the_backend_like_the_backend_follows_the_url(tmp_path: Path) -> None:
    assert create_idempotency_store(Settings(backend="memory://"), MemoryBackend()).name == "memory"
    # A single-process local:// server is a group of one: nobody to share keys with.
    alone = Settings(backend="local://", local_dir=str(tmp_path))
    assert create_idempotency_store(alone, LocalBackend()).name == "memory"
    grouped = Settings(backend="local://", local_dir=str(tmp_path), local_group="g")
    store = create_idempotency_store(grouped, LocalBackend())
    assert isinstance(store, SqliteIdempotencyStore)
    assert store.path == tmp_path / "g" / "idempotency.sqlite3"
