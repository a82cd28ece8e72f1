"""Which history store a server uses: the one every process sharing its backend shares.

Chosen by the backend, as the idempotency store is:

- memory:// (one process), or local:// in a single-process server: :mod:`.memory`;
- local:// with ``--workers N`` (or FANOUT_LOCAL_GROUP): one SQLite file in the group's
  folder, shared by the workers of the host and removed by the last of them (:mod:`.sqlite`);
- redis://: Redis Streams, shared by every host (:mod:`.redis`).

FANOUT_HISTORY_FILE replaces the first two with a SQLite file at that path, which the
server never removes: the processes of one server share it (one, or the workers of one
host), and a restarted server continues its epochs and offsets, so clients recover across
the restart. One file per server: two servers running on one file would number each
other's channels (their subscribers would see each other's publications, filled in as
holes). With redis:// the setting has no effect (history is in Redis; a warning says so
at start-up, see :func:`app.config.ignored_settings`).

A worker-local store would be wrong for more than one worker: each would number the same
channel's publications on its own, and two publications would share an offset.
"""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.services.backends import Backend
from app.services.backends.local_folder import shared_folder
from app.services.history.memory import MemoryHistoryStore
from app.services.history.sqlite import FILE_NAME, SqliteHistoryStore
from app.services.history.store import HistoryStore


def create_history_store(settings: Settings, backend: Backend) -> HistoryStore:
    """The store that every process sharing ``backend`` shares too; opens nothing yet.

    ``backend`` is the one :func:`~app.services.backends.create_backend` made from the same
    settings (so FANOUT_BACKEND's scheme was checked there); its name picks the store.
    """
    if backend.name == "redis":
        from app.services.history.redis import RedisHistoryStore

        return RedisHistoryStore(settings.backend, timeout=settings.redis_timeout)
    if settings.history_file:
        return SqliteHistoryStore(Path(settings.history_file), keep=True)
    if backend.name == "local":
        # The same folder and group rule as LocalBackend: a worker of a multi-process
        # server (or of an explicit group) shares a folder with its siblings.
        folder = shared_folder(settings.local_dir, settings.local_group)
        return MemoryHistoryStore() if folder is None else SqliteHistoryStore(folder / FILE_NAME)
    return MemoryHistoryStore()  # memory://: one process, nobody to share with
