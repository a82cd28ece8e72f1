"""Idempotent publishing: the same key within 5 minutes publishes once, on every worker and
host. The store is chosen by the backend's URL scheme, as the backend is:

- memory:// (one process), or local:// in a single-process server: a dict in the process;
- local:// with ``--workers N`` (or FANOUT_LOCAL_GROUP): one SQLite file in the group's
  folder, shared by the workers of the host;
- redis://: Redis, shared by every host.

A worker-local store would be wrong for more than one worker: each would publish once.
"""

from __future__ import annotations

from app.config import Settings
from app.services.backends import Backend
from app.services.backends.local_folder import shared_folder
from app.services.idempotency.base import (
    LEASE,
    RESULT_TTL,
    WAIT,
    Claim,
    IdempotencyConflict,
    IdempotencyStore,
    IdempotencyUnavailable,
    run_once,
)
from app.services.idempotency.memory import MemoryIdempotencyStore
from app.services.idempotency.sqlite import SqliteIdempotencyStore

__all__ = [
    "LEASE",
    "RESULT_TTL",
    "WAIT",
    "Claim",
    "IdempotencyConflict",
    "IdempotencyStore",
    "IdempotencyUnavailable",
    "MemoryIdempotencyStore",
    "SqliteIdempotencyStore",
    "create_idempotency_store",
    "run_once",
]


def create_idempotency_store(settings: Settings, backend: Backend) -> IdempotencyStore:
    """The store that every process sharing ``backend`` shares too; connects nothing yet.

    ``backend`` is the one :func:`~app.services.backends.create_backend` made from the same
    settings (so FANOUT_BACKEND's scheme was checked there); its name picks the store.
    """
    if backend.name == "local":
        # The same folder and group rule as LocalBackend: a worker of a multi-process
        # server (or of an explicit group) shares a folder with its siblings.
        folder = shared_folder(settings.local_dir, settings.local_group)
        return MemoryIdempotencyStore() if folder is None else SqliteIdempotencyStore(folder)
    if backend.name == "redis":
        from app.services.idempotency.redis import RedisIdempotencyStore

        return RedisIdempotencyStore(settings.backend)
    return MemoryIdempotencyStore()  # memory://: one process, nobody to share with
