"""History in one SQLite file, shared by the processes that open it: the workers of one
host (local:// with several workers), and with FANOUT_HISTORY_FILE every run of a server.

Why SQLite: an offset must be assigned once across processes that have no coordinator
(the workers of a group find each other by scanning a folder), must survive the death of
any worker, and must need nothing beyond the standard library. An append is one
``BEGIN IMMEDIATE`` transaction (read or make the channel's meta row, take ``top + 1``,
insert, trim), so SQLite's write lock numbers the workers' appends one after another; a
read is one deferred transaction, a consistent snapshot (WAL: readers never block the
writer nor wait for it).

Tables: ``meta(channel, epoch, top, updated, expires)`` (``updated``: the newest append,
or when a read first touched the channel; ``expires``: ``updated + ttl``, NULL without a
ttl, for the sweep) and ``entries(channel, offset, kind, data, created)``. Retention is the
memory store's: a publication expires ``ttl`` seconds after its own append, and a channel
with no append for ``ttl`` seconds is forgotten, epoch too (a new epoch, from offset 1).
Every minute a worker deletes the channels whose ``expires`` has passed.

Two lifetimes, one store (``keep``):

- the group file (``keep=False``): ``history.sqlite3`` in the local backend's group folder,
  removed with the folder by the last worker to stop (as the idempotency store's file):
  history lives as long as one worker of the group does, and a server restarted as a whole
  starts new epochs, as with the memory store. A worker that finds the file gone or
  replaced (a sibling that took itself for the last one while this worker was starting)
  opens the new file: its channels get new epochs there, so no client recovers across the
  two files.
- FANOUT_HISTORY_FILE (``keep=True``): the file is never removed, so a server stopped or
  killed and started again continues each channel's epoch and offsets, and its clients
  recover what was published while it was down. Its folder is made (0o700) if missing.

Either file is created by the first append or read (a server without history channels never
creates it). A file that cannot be opened (no permission, not a database) makes each call
fail as unavailable (503), with one warning in the log until it opens again.

Every SQLite call runs on this store's own single thread: a connection stays on the thread
that made it, calls need no lock, and the event loop never waits on a file lock (busy
timeout :data:`BUSY_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from app.logging_setup import LOGGER_NAME
from app.services.history.memory import new_epoch
from app.services.history.store import Entry, HistoryUnavailable, Position, Retention
from app.services.shared_sqlite import open_shared, remove_if_last, run_on

FILE_NAME: Final = "history.sqlite3"
BUSY_TIMEOUT: Final = 5.0
"""Seconds a call waits for another worker's write lock before failing (503)."""
SWEEP_EVERY: Final = 60.0
"""Seconds between two deletions of expired channels by this worker."""

_SCHEMA: Final = (
    """
CREATE TABLE IF NOT EXISTS meta (
    channel TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    top INTEGER NOT NULL,
    updated REAL NOT NULL,
    expires REAL
) WITHOUT ROWID
""",
    "CREATE INDEX IF NOT EXISTS meta_expires ON meta (expires) WHERE expires IS NOT NULL",
    """
CREATE TABLE IF NOT EXISTS entries (
    channel TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (channel, "offset")
) WITHOUT ROWID
""",
)
_META: Final = "SELECT epoch, top, updated FROM meta WHERE channel = ?1"
_SET_META: Final = """
INSERT INTO meta (channel, epoch, top, updated, expires) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (channel) DO UPDATE
SET epoch = excluded.epoch, top = excluded.top, updated = excluded.updated,
    expires = excluded.expires
"""
_INSERT: Final = 'INSERT INTO entries (channel, "offset", kind, data, created) VALUES (?,?,?,?,?)'
_FORGET: Final = "DELETE FROM entries WHERE channel = ?1"
_TRIM_SIZE: Final = 'DELETE FROM entries WHERE channel = ?1 AND "offset" <= ?2'
# The first publication still alive; the ones before it have expired (appends are in time
# order, so the expired ones are a prefix: found by walking the primary key from the head).
_FIRST_ALIVE: Final = """
SELECT "offset" FROM entries WHERE channel = ?1 AND created > ?2 ORDER BY "offset" LIMIT 1
"""
_TRIM_TTL: Final = f'DELETE FROM entries WHERE channel = ?1 AND "offset" < ({_FIRST_ALIVE})'
_RANGE: Final = """
SELECT "offset", kind, data FROM entries WHERE channel = ?1 AND "offset" > ?2
ORDER BY "offset" LIMIT ?3
"""
_SWEEP_ENTRIES: Final = (
    "DELETE FROM entries WHERE channel IN (SELECT channel FROM meta WHERE expires <= ?1)"
)
_SWEEP_META: Final = "DELETE FROM meta WHERE expires <= ?1"

T = TypeVar("T")

logger = logging.getLogger(LOGGER_NAME)


class SqliteHistoryStore:
    """History shared by every process that opens the same file; see the module
    documentation."""

    name = "sqlite"

    def __init__(self, path: Path, *, keep: bool = False) -> None:
        """``path``: the file; ``keep``: never remove it (FANOUT_HISTORY_FILE), else the last
        worker of the group removes it and its folder on stop."""
        self.path = path
        self.folder = path.parent
        self.keep = keep
        self._failing = False
        """Opening the file failed, and was logged; logged again only after it opened."""
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        """(device, inode) of the file ``_db`` has open."""
        self._executor: ThreadPoolExecutor | None = None
        self._next_sweep = 0.0
        self.reopened = 0
        """Times the file was found gone or replaced, and opened anew."""

    async def start(self) -> None:
        """Start the store's thread; the file is opened by the first call."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fanout-history")

    async def stop(self) -> None:
        """Close the file; unless kept, the last worker of the group removes it (and the
        empty folder)."""
        executor = self._executor
        if executor is None:
            return
        self._executor = None
        await asyncio.get_running_loop().run_in_executor(executor, self._close)
        executor.shutdown(wait=False)

    async def append(self, channel: str, kind: str, data: bytes, retention: Retention) -> Position:
        """Keep one publication under the channel's next offset; see HistoryStore."""
        return await self._run(lambda: self._append(channel, kind, data, retention))

    async def read(
        self, channel: str, after: int, limit: int | None, retention: Retention
    ) -> tuple[Position, list[Entry]]:
        """The channel's position and what it keeps above ``after``; see HistoryStore."""
        return await self._run(lambda: self._read(channel, after, limit, retention))

    def status(self) -> dict[str, object]:
        """Name and file."""
        return {
            "name": self.name,
            "path": str(self.path),
            "kept": self.keep,
            "open": self._db is not None,
        }

    # -- on the store's thread ----------------------------------------------------------------

    async def _run(self, call: Callable[[], T]) -> T:
        return await run_on(self._executor, call, HistoryUnavailable)

    def _append(self, channel: str, kind: str, data: bytes, retention: Retention) -> Position:
        db = self._connection()
        now = time.time()
        ttl = retention.ttl
        if now >= self._next_sweep:
            self._sweep(db, now)
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(_META, (channel,)).fetchone()
            if row is None or _expired(row[2], now, ttl):
                epoch, top = new_epoch(), 1
                if row is not None:
                    db.execute(_FORGET, (channel,))
            else:
                epoch, top = row[0], row[1] + 1
            db.execute(_SET_META, (channel, epoch, top, now, now + ttl if ttl > 0 else None))
            db.execute(_INSERT, (channel, top, kind, data, now))
            if top > retention.size:
                db.execute(_TRIM_SIZE, (channel, top - max(retention.size, 0)))
            if ttl > 0:
                db.execute(_TRIM_TTL, (channel, now - ttl))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return Position(top, epoch)

    def _read(
        self, channel: str, after: int, limit: int | None, retention: Retention
    ) -> tuple[Position, list[Entry]]:
        db = self._connection()
        now = time.time()
        # A snapshot first; a channel without live meta is then made under the write lock
        # (and looked at again there: another worker may have appended meanwhile).
        for begin in ("BEGIN", "BEGIN IMMEDIATE"):
            db.execute(begin)
            try:
                found = self._snapshot(db, channel, after, limit, retention, now, begin != "BEGIN")
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            if found is not None:
                return found
        raise AssertionError("unreachable: the second pass makes the channel")

    def _snapshot(
        self,
        db: sqlite3.Connection,
        channel: str,
        after: int,
        limit: int | None,
        retention: Retention,
        now: float,
        make: bool,
    ) -> tuple[Position, list[Entry]] | None:
        ttl = retention.ttl
        row = db.execute(_META, (channel,)).fetchone()
        if row is None or _expired(row[2], now, ttl):
            if not make:
                return None
            epoch = new_epoch()
            if row is not None:
                db.execute(_FORGET, (channel,))
            db.execute(_SET_META, (channel, epoch, 0, now, now + ttl if ttl > 0 else None))
            return Position(0, epoch), []
        position = Position(row[1], row[0])
        if limit == 0 or after >= position.offset:
            return position, []
        if ttl > 0:
            first = db.execute(_FIRST_ALIVE, (channel, now - ttl)).fetchone()
            if first is None:
                return position, []
            after = max(after, first[0] - 1)
        rows = db.execute(_RANGE, (channel, after, -1 if limit is None else limit)).fetchall()
        return position, [Entry(offset, kind, bytes(data)) for offset, kind, data in rows]

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        """Delete the channels no append has touched for their ttl."""
        self._next_sweep = now + SWEEP_EVERY
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_SWEEP_ENTRIES, (now,))
            db.execute(_SWEEP_META, (now,))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def _connection(self) -> sqlite3.Connection:
        db = self._db
        if db is not None:
            try:
                info = os.stat(self.path)
                identity: tuple[int, int] | None = (info.st_dev, info.st_ino)
            except FileNotFoundError:
                identity = None
            if identity == self._identity:
                return db
            self.reopened += 1
            self._close_connection()
        try:
            db, info = self._open()
        except (sqlite3.Error, OSError) as exc:
            if not self._failing:
                self._failing = True
                logger.warning("history file %s cannot be opened: %s", self.path, exc)
            raise
        if self._failing:
            self._failing = False
            logger.info("history file %s opened", self.path)
        self._db, self._identity = db, (info.st_dev, info.st_ino)
        return db

    def _open(self) -> tuple[sqlite3.Connection, os.stat_result]:
        # 0o700 like the backend: only this user's processes share the history.
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = open_shared(self.path, BUSY_TIMEOUT, _SCHEMA)
        try:
            return db, os.stat(self.path)
        except OSError:
            db.close()
            raise

    def _close_connection(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db, self._identity = None, None

    def _close(self) -> None:
        self._close_connection()
        if not self.keep:
            self._remove_if_last()

    def _remove_if_last(self) -> None:
        remove_if_last(self.path, self.folder)


def _expired(updated: float, now: float, ttl: float) -> bool:
    return ttl > 0 and updated + ttl <= now


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
