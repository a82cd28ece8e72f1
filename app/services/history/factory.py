"""Which history store a server uses: the one every process sharing its backend shares.

Chosen by the backend, as the idempotency store is:

- memory:// (one process), or local:// in a single-process server: :mod:`.memory`;
- local:// with ``--workers N`` (or FANOUT_LOCAL_GROUP): one SQLite file in the group's
  folder, shared by the workers of the host (:mod:`.sqlite`);
- redis://: Redis Streams, shared by every host (:mod:`.redis`).

A worker-local store would be wrong for more than one worker: each would number the same
channel's publications on its own, and two publications would share an offset.
"""

from __future__ import annotations

from app.config import Settings
from app.services.backends import Backend
from app.services.backends.local_folder import shared_folder
from app.services.history.memory import MemoryHistoryStore
from app.services.history.sqlite import SqliteHistoryStore
from app.services.history.store import HistoryStore


def create_history_store(settings: Settings, backend: Backend) -> HistoryStore:
    """The store that every process sharing ``backend`` shares too; opens nothing yet.

    ``backend`` is the one :func:`~app.services.backends.create_backend` made from the same
    settings (so FANOUT_BACKEND's scheme was checked there); its name picks the store.
    """
    if backend.name == "local":
        # The same folder and group rule as LocalBackend: a worker of a multi-process
        # server (or of an explicit group) shares a folder with its siblings.
        folder = shared_folder(settings.local_dir, settings.local_group)
        return MemoryHistoryStore() if folder is None else SqliteHistoryStore(folder)
    if backend.name == "redis":
        from app.services.history.redis import RedisHistoryStore

        return RedisHistoryStore(settings.backend, timeout=settings.redis_timeout)
    return MemoryHistoryStore()  # memory://: one process, nobody to share with
