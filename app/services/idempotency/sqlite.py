"""local://: the workers of one host share their idempotency keys in one SQLite file.

Why SQLite: the claim must be atomic across processes that have no coordinator (the
workers of a group find each other by scanning a folder, and a new worker is not linked to
the others for up to a scan interval), must survive the death of any worker, and must need
nothing beyond the standard library. One ``INSERT ... ON CONFLICT DO UPDATE ... WHERE
expired`` is such a claim: the first writer wins, an expired entry is taken over, and
SQLite's file locks serialize the workers (WAL mode: readers never block the writer).

The file is ``idempotency.sqlite3`` in the local backend's group folder, created on the
first request that carries a key (a server that never sees one never creates it), and
removed with the folder by the last worker to stop. Every SQLite call runs on this store's
own single thread: a connection stays on the thread that made it, calls need no lock, and
the event loop and the default executor never wait on a file lock (busy timeout 2 s).
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
from app.services.idempotency.base import PENDING, Claim, IdempotencyUnavailable
from app.services.shared_sqlite import open_shared, remove_if_last, run_on

logger = logging.getLogger(LOGGER_NAME)

FILE_NAME: Final = "idempotency.sqlite3"
BUSY_TIMEOUT: Final = 2.0
"""Seconds a call waits for another worker's write lock before failing (503)."""
SWEEP_EVERY: Final = 60.0
"""Seconds between two deletions of expired rows by this worker."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    owner TEXT,
    result BLOB,
    expires REAL NOT NULL
) WITHOUT ROWID
"""
# One statement: a new key is inserted, an expired one taken over, a live one left alone
# (0 rows changed). Claims are "owner set, result NULL"; results "owner NULL, result set".
_CLAIM: Final = """
INSERT INTO idempotency (key, owner, result, expires) VALUES (?1, ?2, NULL, ?3)
ON CONFLICT (key) DO UPDATE SET owner = ?2, result = NULL, expires = ?3
WHERE idempotency.expires <= ?4
"""
_LOOK: Final = "SELECT result FROM idempotency WHERE key = ?1 AND expires > ?2"
_COMPLETE: Final = (
    "UPDATE idempotency SET owner = NULL, result = ?3, expires = ?4 WHERE key = ?1 AND owner = ?2"
)
_RELEASE: Final = "DELETE FROM idempotency WHERE key = ?1 AND owner = ?2"
_SWEEP: Final = "DELETE FROM idempotency WHERE expires <= ?1"

T = TypeVar("T")


class SqliteIdempotencyStore:
    """Keys shared by every process that opens the same file; see the module documentation."""

    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / FILE_NAME
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._next_sweep = 0.0
        self._counter = 0
        self._pid = os.getpid()

    async def start(self) -> None:
        """Start the store's thread; the file is opened by the first claim."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fanout-idem")

    async def stop(self) -> None:
        """Close the file; the last worker of the group removes it (and the empty folder)."""
        executor = self._executor
        if executor is None:
            return
        self._executor = None
        await asyncio.get_running_loop().run_in_executor(executor, self._close)
        executor.shutdown(wait=False)

    async def claim(self, key: str, lease: float) -> Claim:
        """Take ``key`` if it is free or expired; see IdempotencyStore."""
        self._counter += 1
        token = f"{self._pid}-{self._counter}"
        return await self._run(lambda: self._claim(key, token, lease))

    async def complete(self, key: str, token: str, result: bytes, ttl: float) -> None:
        """Keep ``result`` for ``ttl`` seconds if ``token`` still holds ``key``."""
        await self._run(lambda: self._execute(_COMPLETE, (key, token, result, time.time() + ttl)))

    async def release(self, key: str, token: str) -> None:
        """Forget ``key`` if ``token`` still holds it."""
        await self._run(lambda: self._execute(_RELEASE, (key, token)))

    def status(self) -> dict[str, object]:
        """Name and file."""
        return {"name": self.name, "path": str(self.path), "open": self._db is not None}

    # -- on the store's thread ----------------------------------------------------------------

    async def _run(self, call: Callable[[], T]) -> T:
        return await run_on(self._executor, call, IdempotencyUnavailable)

    def _connection(self) -> sqlite3.Connection:
        db = self._db
        if db is None:
            # 0o700 like the backend: only this user's processes share the keys.
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            db = self._db = open_shared(self.path, BUSY_TIMEOUT, [_SCHEMA])
        return db

    def _claim(self, key: str, token: str, lease: float) -> Claim:
        db = self._connection()
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            db.execute(_SWEEP, (now,))
        if db.execute(_CLAIM, (key, token, now + lease, now)).rowcount == 1:
            return Claim(token=token)
        row = db.execute(_LOOK, (key, now)).fetchone()
        if row is None or row[0] is None:
            # Pending, or it expired between the two statements: the caller looks again.
            return PENDING
        return Claim(result=bytes(row[0]))

    def _execute(self, sql: str, args: tuple[object, ...]) -> None:
        self._connection().execute(sql, args)

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._remove_if_last()

    def _remove_if_last(self) -> None:
        remove_if_last(self.path, self.folder)
