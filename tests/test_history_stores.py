"""The history stores' shared contract, run against each of them, and what only one has.

Memory is one object; SQLite is tested with store objects on one file (as the workers of a
host hold it: one connection each); Redis against a real redis-server (the ``redis_server``
fixture), with two store objects as two workers or hosts would have.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from app.config import Settings, ignored_settings
from app.services.backends import create_backend
from app.services.backends.local import LocalBackend
from app.services.backends.memory import MemoryBackend
from app.services.history.factory import create_history_store
from app.services.history.memory import MemoryHistoryStore
from app.services.history.redis import RedisHistoryStore, meta_key, stream_key
from app.services.history.sqlite import FILE_NAME, SqliteHistoryStore
from app.services.history.store import (
    KIND_BINARY,
    KIND_JSON,
    KIND_TEXT,
    Entry,
    HistoryStore,
    HistoryUnavailable,
    Retention,
)
from tests.support.redis_server import RedisServer

KEEP = Retention(size=1000, ttl=0)


class Stores:
    """Opens started stores on one backing (one dict, one file, one Redis); stops them."""

    def __init__(self, kind: str, folder: Path, redis: RedisServer | None) -> None:
        self.kind = kind
        self.folder = folder
        self.redis = redis
        self.opened: list[HistoryStore] = []

    async def open(self) -> HistoryStore:
        """A started store; for memory always the same one (a process has one)."""
        if self.kind == "memory" and self.opened:
            return self.opened[0]
        store: HistoryStore
        if self.kind == "memory":
            store = MemoryHistoryStore()
        elif self.kind == "sqlite":
            store = SqliteHistoryStore(self.folder / FILE_NAME)
        else:
            assert self.redis is not None
            store = RedisHistoryStore(self.redis.url)
        await store.start()
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in self.opened:
            await store.stop()


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """Each store in turn (Redis starts a redis-server only for its own turn)."""
    redis = request.getfixturevalue("redis_server") if request.param == "redis" else None
    opened = Stores(request.param, tmp_path / "sup-1", redis)
    yield opened
    await opened.close()


@pytest.fixture
async def store(stores: Stores) -> HistoryStore:
    return await stores.open()


@pytest.fixture(params=["sqlite", "redis"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """The stores that several processes share."""
    redis = request.getfixturevalue("redis_server") if request.param == "redis" else None
    opened = Stores(request.param, tmp_path / "sup-1", redis)
    yield opened
    await opened.close()


async def append_texts(store: HistoryStore, channel: str, count: int, r: Retention) -> None:
    for i in range(1, count + 1):
        await store.append(channel, KIND_TEXT, b"m%d" % i, r)


def offsets(entries: list[Entry]) -> list[int]:
    return [entry.offset for entry in entries]


# -- the contract, for every store ----------------------------------------------------------


async def test_offsets_count_from_one_per_channel_and_channels_are_independent(
    store: HistoryStore,
) -> None:
    a = [await store.append("a", KIND_TEXT, b"x", KEEP) for _ in range(3)]
    b = [await store.append("b", KIND_TEXT, b"y", KEEP) for _ in range(2)]
    assert [p.offset for p in a] == [1, 2, 3]
    assert [p.offset for p in b] == [1, 2]
    assert (await store.append("a", KIND_TEXT, b"x", KEEP)).offset == 4


async def test_the_epoch_stays_the_same_across_appends_and_reads(store: HistoryStore) -> None:
    first = await store.append("a", KIND_TEXT, b"x", KEEP)
    assert len(first.epoch) == 16 and int(first.epoch, 16) >= 0
    position, _ = await store.read("a", 0, None, KEEP)
    later = await store.append("a", KIND_TEXT, b"x", KEEP)
    again, _ = await store.read("a", 2, 0, KEEP)
    assert {first.epoch, position.epoch, later.epoch, again.epoch} == {first.epoch}
    other = await store.append("b", KIND_TEXT, b"x", KEEP)
    assert other.epoch != first.epoch


async def test_a_first_read_makes_the_epoch_that_the_first_append_continues(
    store: HistoryStore,
) -> None:
    position, entries = await store.read("a", 0, None, KEEP)
    assert (position.offset, entries) == (0, [])
    assert (await store.read("a", 0, None, KEEP))[0] == position
    appended = await store.append("a", KIND_TEXT, b"x", KEEP)
    assert (appended.offset, appended.epoch) == (1, position.epoch)


async def test_a_read_returns_exactly_the_later_entries_in_order_up_to_the_limit(
    store: HistoryStore,
) -> None:
    await append_texts(store, "a", 10, KEEP)
    position, entries = await store.read("a", 4, None, KEEP)
    assert position.offset == 10
    assert offsets(entries) == [5, 6, 7, 8, 9, 10]
    assert [e.data for e in entries] == [b"m%d" % i for i in range(5, 11)]
    _, limited = await store.read("a", 4, 3, KEEP)
    assert offsets(limited) == [5, 6, 7]
    _, near_the_newest = await store.read("a", 7, 2, KEEP)
    assert offsets(near_the_newest) == [8, 9]
    _, everything = await store.read("a", 0, None, KEEP)
    assert offsets(everything) == list(range(1, 11))
    _, none = await store.read("a", 10, None, KEEP)
    assert none == []
    _, beyond = await store.read("a", 99, 5, KEEP)
    assert beyond == []


async def test_limit_zero_returns_the_position_only(store: HistoryStore) -> None:
    appended = [await store.append("a", KIND_TEXT, b"x", KEEP) for _ in range(3)]
    position, entries = await store.read("a", 0, 0, KEEP)
    assert (position, entries) == (appended[-1], [])


async def test_trimming_by_size_keeps_only_the_newest(store: HistoryStore) -> None:
    small = Retention(size=5, ttl=0)
    await append_texts(store, "a", 12, small)
    position, entries = await store.read("a", 0, None, small)
    assert position.offset == 12
    assert offsets(entries) == [8, 9, 10, 11, 12]  # the first kept is top - size + 1
    assert [e.data for e in entries] == [b"m%d" % i for i in range(8, 13)]
    _, from_trimmed = await store.read("a", 3, 2, small)
    assert offsets(from_trimmed) == [8, 9]


async def test_a_publication_expires_ttl_after_its_own_append(store: HistoryStore) -> None:
    brief = Retention(size=100, ttl=2.0)
    first = await store.append("a", KIND_TEXT, b"old", brief)
    await asyncio.sleep(1.2)
    await store.append("a", KIND_TEXT, b"new", brief)
    await asyncio.sleep(1.0)  # the first is 2.2 s old, the second 1.0 s
    position, entries = await store.read("a", 0, None, brief)
    assert (position.offset, position.epoch) == (2, first.epoch)
    assert [(e.offset, e.data) for e in entries] == [(2, b"new")]


async def test_a_channel_idle_for_its_ttl_is_forgotten_and_starts_a_new_epoch_at_one(
    store: HistoryStore,
) -> None:
    brief = Retention(size=100, ttl=1.0)
    await append_texts(store, "a", 3, brief)
    old = await store.append("a", KIND_TEXT, b"last", brief)
    await asyncio.sleep(1.3)
    position, entries = await store.read("a", 0, None, brief)
    assert (position.offset, entries) == (0, [])
    assert position.epoch != old.epoch
    appended = await store.append("a", KIND_TEXT, b"again", brief)
    assert (appended.offset, appended.epoch) == (1, position.epoch)
    _, kept = await store.read("a", 0, None, brief)
    assert [(e.offset, e.data) for e in kept] == [(1, b"again")]


async def test_an_append_after_the_ttl_also_starts_a_new_epoch_at_one(
    store: HistoryStore,
) -> None:
    brief = Retention(size=100, ttl=1.0)
    old = await store.append("a", KIND_TEXT, b"x", brief)
    await asyncio.sleep(1.3)
    appended = await store.append("a", KIND_TEXT, b"y", brief)
    assert appended.offset == 1 and appended.epoch != old.epoch
    _, kept = await store.read("a", 0, None, brief)
    assert [(e.offset, e.data) for e in kept] == [(1, b"y")]


async def test_kinds_and_bytes_round_trip_exactly(store: HistoryStore) -> None:
    published = [
        (KIND_BINARY, bytes(range(256)) * 3),
        (KIND_JSON, b' {\t"a" :[1 ,  2.50, "\\u00e9"] ,"b":null}\r\n '),
        (KIND_TEXT, "héllo ✓ 𝄞 — \x00 end".encode()),
        (KIND_BINARY, b""),
        (KIND_TEXT, b""),
    ]
    for kind, data in published:
        await store.append("a", kind, data, KEEP)
    _, entries = await store.read("a", 0, None, KEEP)
    assert [(e.kind, e.data) for e in entries] == published
    assert all(type(e.data) is bytes for e in entries)


# -- shared by several workers or hosts -----------------------------------------------------


async def test_two_workers_number_one_channel_without_duplicates(shared: Stores) -> None:
    first, second = await shared.open(), await shared.open()
    r = Retention(size=1000, ttl=60)

    async def publish(store: HistoryStore, name: str) -> list[int]:
        positions = await asyncio.gather(
            *(store.append("a", KIND_TEXT, b"%s%d" % (name.encode(), i), r) for i in range(200))
        )
        assert len({p.epoch for p in positions}) == 1
        return [p.offset for p in positions]

    numbered = await asyncio.gather(publish(first, "x"), publish(second, "y"))
    assert sorted(numbered[0] + numbered[1]) == list(range(1, 401))
    position, entries = await second.read("a", 0, None, r)
    assert position.offset == 400
    assert offsets(entries) == list(range(1, 401))
    assert sum(e.data.startswith(b"x") for e in entries) == 200
    assert (await first.read("a", 0, 0, r))[0] == position


async def test_what_one_worker_appends_another_reads(shared: Stores) -> None:
    first, second = await shared.open(), await shared.open()
    appended = await first.append("a", KIND_JSON, b'{"n":1}', KEEP)
    position, entries = await second.read("a", 0, None, KEEP)
    assert position == appended
    assert entries == [Entry(1, KIND_JSON, b'{"n":1}')]
    assert (await second.append("a", KIND_TEXT, b"x", KEEP)).offset == 2


# -- memory ---------------------------------------------------------------------------------


async def test_memory_store_keeps_at_most_its_channels_forgetting_the_idle_first() -> None:
    store = MemoryHistoryStore(max_channels=100)
    await store.start()
    busy = await store.append("busy", KIND_TEXT, b"x", KEEP)
    for i in range(300):
        await store.append(f"c{i}", KIND_TEXT, b"x", KEEP)
        await store.read("busy", 0, 0, KEEP)  # keeps "busy" the most recently touched
    assert store.status()["channels"] == 100
    assert store.evicted == 201
    assert (await store.read("busy", 0, None, KEEP))[0] == busy
    forgotten, _ = await store.read("c0", 0, None, KEEP)
    assert forgotten.offset == 0
    await store.stop()


# -- SQLite ---------------------------------------------------------------------------------


async def test_sqlite_file_is_made_on_first_use_and_removed_by_the_last_worker(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "sup-1"
    first, second = SqliteHistoryStore(folder / FILE_NAME), SqliteHistoryStore(folder / FILE_NAME)
    for store in (first, second):
        await store.start()
    assert not folder.exists()
    for store in (first, second):
        await store.append("a", KIND_TEXT, b"x", KEEP)
    sibling = folder / "4242.sock"
    sibling.touch()
    await first.stop()
    assert first.path.exists(), "a sibling is still there"
    sibling.unlink()
    await second.stop()
    assert not folder.exists()


async def test_sqlite_worker_whose_file_was_removed_opens_a_new_one_with_a_new_epoch(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "sup-1"
    leaving = SqliteHistoryStore(folder / FILE_NAME)
    staying = SqliteHistoryStore(folder / FILE_NAME)
    for store in (leaving, staying):
        await store.start()
    old = await staying.append("a", KIND_TEXT, b"x", KEEP)
    await leaving.append("a", KIND_TEXT, b"x", KEEP)
    await leaving.stop()  # no socket in the folder: it takes itself for the last worker
    assert not leaving.path.exists()
    appended = await staying.append("a", KIND_TEXT, b"y", KEEP)
    assert appended.offset == 1 and appended.epoch != old.epoch
    assert staying.reopened == 1 and staying.path.exists()
    await staying.stop()


async def test_sqlite_store_not_started_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(HistoryUnavailable):
        await SqliteHistoryStore(tmp_path / FILE_NAME).append("a", KIND_TEXT, b"x", KEEP)


async def test_a_kept_sqlite_file_outlives_its_stores_and_the_next_one_continues_the_epoch(
    tmp_path: Path,
) -> None:
    # FANOUT_HISTORY_FILE: a server stopped (or killed) and started again on the same file.
    path = tmp_path / "state" / "fanout" / "history.sqlite3"
    first = SqliteHistoryStore(path, keep=True)
    await first.start()
    before = [await first.append("a", KIND_TEXT, b"m%d" % i, KEEP) for i in (1, 2, 3)]
    await first.stop()  # no sibling socket anywhere: a group file would be removed here
    assert path.exists()
    assert path.parent.stat().st_mode & 0o777 == 0o700
    again = SqliteHistoryStore(path, keep=True)
    await again.start()
    position, entries = await again.read("a", 1, None, KEEP)
    assert position == before[-1]
    assert [(e.offset, e.data) for e in entries] == [(2, b"m2"), (3, b"m3")]
    appended = await again.append("a", KIND_TEXT, b"m4", KEEP)
    assert (appended.offset, appended.epoch) == (4, before[0].epoch)
    assert again.status()["kept"] is True
    await again.stop()
    assert path.exists()


async def test_a_history_file_that_cannot_be_opened_is_unavailable_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's logging setup (another test may have run it) stops "fanout" propagating.
    monkeypatch.setattr(logging.getLogger("fanout"), "propagate", True)
    path = tmp_path / "notes.txt"
    path.write_text("not a database, and not to be overwritten\n" * 100)
    store = SqliteHistoryStore(path, keep=True)
    await store.start()
    for _ in range(3):
        with pytest.raises(HistoryUnavailable, match="not a database"):
            await store.append("a", KIND_TEXT, b"x", KEEP)
    await store.stop()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"history file {path} cannot be opened: file is not a database"]
    assert path.read_text().startswith("not a database")


# -- Redis ----------------------------------------------------------------------------------


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_redis_flushall_starts_a_new_epoch_at_one(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    store = RedisHistoryStore(redis_server.url)
    await store.start()
    old = [await store.append("a", KIND_TEXT, b"x", KEEP) for _ in range(3)][-1]
    await redis_client.flushall()
    position, entries = await store.read("a", 0, None, KEEP)
    assert (position.offset, entries) == (0, [])
    assert position.epoch != old.epoch
    appended = await store.append("a", KIND_TEXT, b"y", KEEP)
    assert (appended.offset, appended.epoch) == (1, position.epoch)
    await store.stop()


async def test_redis_stream_left_without_its_meta_is_dropped_with_the_lost_epoch(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    store = RedisHistoryStore(redis_server.url)
    await store.start()
    old = [await store.append("a", KIND_TEXT, b"x", KEEP) for _ in range(3)][-1]
    await redis_client.delete(meta_key("a"))  # as an eviction of the hash alone would
    appended = await store.append("a", KIND_TEXT, b"y", KEEP)
    assert appended.offset == 1 and appended.epoch != old.epoch
    _, entries = await store.read("a", 0, None, KEEP)
    assert [(e.offset, e.data) for e in entries] == [(1, b"y")]
    await store.stop()


async def test_redis_keys_share_a_hash_slot_and_expire_with_the_ttl(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    assert stream_key("news") == "fanout:{news}:h" and meta_key("news") == "fanout:{news}:m"
    assert key_slot(stream_key("news").encode()) == key_slot(meta_key("news").encode())
    store = RedisHistoryStore(redis_server.url)
    await store.start()
    await store.append("news", KIND_TEXT, b"x", Retention(size=10, ttl=30))
    for key in (stream_key("news"), meta_key("news")):
        assert 0 < await redis_client.pttl(key) <= 30_000
    await store.append("news", KIND_TEXT, b"x", Retention(size=10, ttl=0))
    for key in (stream_key("news"), meta_key("news")):
        assert await redis_client.pttl(key) == -1
    await store.stop()


async def test_redis_down_is_unavailable_within_the_timeout_and_works_after_a_restart(
    redis_server: RedisServer,
) -> None:
    store = RedisHistoryStore(redis_server.url, timeout=0.5)
    await store.start()
    old = await store.append("a", KIND_TEXT, b"x", KEEP)
    redis_server.kill()
    for call in (
        store.append("a", KIND_TEXT, b"y", KEEP),
        store.read("a", 0, None, KEEP),
    ):
        started = time.monotonic()
        with pytest.raises(HistoryUnavailable):
            await call
        assert time.monotonic() - started < 2.0
    redis_server.start()  # empty: no persistence, so the history is lost
    appended = await store.append("a", KIND_TEXT, b"z", KEEP)
    assert appended.offset == 1 and appended.epoch != old.epoch
    await store.stop()


async def test_redis_hung_is_unavailable_within_the_timeout_and_works_once_it_resumes(
    redis_server: RedisServer,
) -> None:
    store = RedisHistoryStore(redis_server.url, timeout=0.5)
    await store.start()
    old = await store.append("a", KIND_TEXT, b"x", KEEP)
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(HistoryUnavailable):
            await store.read("a", 0, None, KEEP)
        assert time.monotonic() - started < 2.0
    finally:
        redis_server.resume()
    position, entries = await store.read("a", 0, None, KEEP)
    assert position == old and offsets(entries) == [1]
    await store.stop()


# -- choosing one ---------------------------------------------------------------------------


def test_store_follows_the_backend_like_the_backend_follows_the_url(tmp_path: Path) -> None:
    memory = create_history_store(Settings(backend="memory://"), MemoryBackend())
    assert isinstance(memory, MemoryHistoryStore)
    # A single-process local:// server is a group of one: nobody to share history with.
    alone = Settings(backend="local://", local_dir=str(tmp_path))
    assert isinstance(create_history_store(alone, LocalBackend()), MemoryHistoryStore)
    grouped = Settings(backend="local://", local_dir=str(tmp_path), local_group="g")
    store = create_history_store(grouped, LocalBackend())
    assert isinstance(store, SqliteHistoryStore)
    assert store.path == tmp_path / "g" / "history.sqlite3"
    redis = Settings(backend="redis://127.0.0.1:1/0")
    assert isinstance(create_history_store(redis, create_backend(redis)), RedisHistoryStore)


def test_a_history_file_takes_the_place_of_the_memory_and_group_stores(tmp_path: Path) -> None:
    file = str(tmp_path / "kept.sqlite3")
    for settings, backend in [
        (Settings(backend="memory://", history_file=file), MemoryBackend()),
        (Settings(backend="local://", local_dir=str(tmp_path), history_file=file), None),
        (Settings(local_dir=str(tmp_path), local_group="g", history_file=file), None),
    ]:
        store = create_history_store(settings, backend or LocalBackend())
        assert isinstance(store, SqliteHistoryStore)
        assert (store.path, store.keep) == (Path(file), True)
    # Redis keeps history itself: the file is ignored (and a warning says so at start-up).
    redis = Settings(backend="redis://127.0.0.1:1/0", history_file=file)
    assert isinstance(create_history_store(redis, create_backend(redis)), RedisHistoryStore)
    assert ignored_settings(redis) == [
        "FANOUT_HISTORY_FILE has no effect with a Redis backend (history is kept in Redis)"
        " and is ignored"
    ]
    assert ignored_settings(Settings(backend="local://", history_file=file)) == []
