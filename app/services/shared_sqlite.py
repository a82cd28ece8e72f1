"""Opening one SQLite file that the workers of a host share (idempotency keys, history)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

RETRY_PAUSE = 0.02
"""Seconds between two tries to open a file another worker is setting up."""


def open_shared(path: Path, busy_timeout: float, schema: Iterable[str]) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with ``schema`` applied, in autocommit.

    Two workers opening a new file at once can be refused at once ("database is locked"),
    without the busy wait, when SQLite would otherwise deadlock switching the file to WAL or
    creating its tables: try again for up to ``busy_timeout``. Call it on a store's own
    thread, never on the event loop.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a worker's crash loses nothing
            for statement in schema:
                db.execute(statement)
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(RETRY_PAUSE)
        except sqlite3.Error:
            db.close()
            raise


def remove_if_last(path: Path, folder: Path) -> None:
    """Remove ``path`` (with its WAL files) and ``folder`` once no worker of the group has a
    socket there.

    Call after the backend removed this worker's socket (Node stops the stores after the
    backend). A sibling that is still stopping may hold the file open; on Unix it keeps its
    (unlinked) copy until it closes it, which it is about to do.
    """
    try:
        if any(name.endswith(".sock") for name in os.listdir(folder)):
            return
    except FileNotFoundError:
        return
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    with contextlib.suppress(OSError):
        folder.rmdir()


async def run_on(
    executor: Executor | None, call: Callable[[], T], unavailable: Callable[[str], Exception]
) -> T:
    """``call()`` on the store's own thread; its SQLite or file errors (and a store that was
    not started) raised as ``unavailable(reason)``, the store's own error."""
    if executor is None:
        raise unavailable("store not started")
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, call)
    except (sqlite3.Error, OSError) as exc:
        raise unavailable(f"{type(exc).__name__}: {exc}") from exc
