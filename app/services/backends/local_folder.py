"""Where the workers of a local:// group meet: one folder per group, one socket per worker.

The folder is the group's only membership list (a sibling is a ``<pid>.sock`` in it), so it
is also where the leftovers of crashed workers are cleaned up: a socket nobody answers on
whose pid is gone, and the folder of a supervisor that is gone. Otherwise a dead worker
would be dialled on every scan, and a crashed run's folder would stay for ever.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

from app.logging_setup import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

MAX_SOCKET_PATH = 100
"""Longest socket path accepted, in bytes: AF_UNIX takes 107 on Linux, 103 on macOS."""


def default_directory() -> Path:
    """$XDG_RUNTIME_DIR/fanout, or a per-user folder in the temporary directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "fanout"
    return Path(tempfile.gettempdir()) / f"fanout-{os.getuid()}"


def default_group() -> str | None:
    """``sup-<supervisor pid>`` for a worker of a multi-process server, None when alone."""
    if multiprocessing.parent_process() is None:
        return None
    return f"sup-{os.getppid()}"


def shared_folder(directory: str, group: str) -> Path | None:
    """The folder the workers of a local:// server share (FANOUT_LOCAL_DIR/<group>), the one
    LocalBackend links them in; None for a process that is a group of its own."""
    name = group or default_group()
    if name is None:
        return None
    return (Path(directory) if directory else default_directory()) / name


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GroupFolder:
    """The folder ``<base>/<group>``: this worker's socket path, its siblings', stale ones."""

    def __init__(self, base: Path, group: str, pid: int) -> None:
        self.base = base
        self.group = group
        self.path = base / group
        self.socket = self.socket_of(pid)
        """This worker's socket."""
        self._pid = pid
        self.stale_removed = 0
        """Sockets of dead workers removed, one by one or with their group's folder."""

    def socket_of(self, pid: int) -> Path:
        """The socket the worker ``pid`` of this group listens on."""
        return self.path / f"{pid}.sock"

    def prepare(self) -> None:
        """Create the folder, clear crashed runs' folders, and free this worker's socket path."""
        # 0o700: only this user's processes may join the group or read its traffic.
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.mkdir(mode=0o700, exist_ok=True)
        self._remove_stale_groups()
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH:
            raise OSError(
                f"local:// socket path too long for AF_UNIX: {self.socket}; set FANOUT_LOCAL_DIR"
            )
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # left by an earlier process that had this pid

    def sibling_pids(self) -> list[int]:
        """The pids of the other workers with a socket in the folder."""
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            # Removed under us (by hand, or a sibling's stale clean-up raced): recreate ours.
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            return []
        pids = []
        for entry in entries:
            stem, dot, ext = entry.partition(".")
            if dot and ext == "sock" and stem.isdigit() and int(stem) != self._pid:
                pids.append(int(stem))
        return pids

    def remove_stale_socket(self, path: Path) -> None:
        """Remove the socket of a worker that is gone (the caller has checked its pid)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            self.stale_removed += 1
            logger.info("local backend: removed stale socket %s", path)

    def leave(self) -> None:
        """Remove this worker's socket, so no scanning sibling takes it for a live one."""
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def remove_if_empty(self) -> None:
        """Remove the folder when this was the last worker of the group."""
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def _remove_stale_groups(self) -> None:
        """Remove the folders of supervisors that are gone (a crashed or killed run)."""
        try:
            entries = list(self.base.iterdir())
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if not name.startswith("sup-") or not name[4:].isdigit() or name == self.group:
                continue
            if pid_alive(int(name[4:])):
                continue
            try:
                sockets = [n[:-5] for n in os.listdir(entry) if n.endswith(".sock")]
            except OSError:
                # Gone already: the workers of one run start together and clean up the same
                # leftovers (Path.glob would raise here, between its is_dir and its scandir).
                continue
            # A folder whose sockets all belong to dead processes is a crashed run's leftover.
            if any(stem.isdigit() and pid_alive(int(stem)) for stem in sockets):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            self.stale_removed += len(sockets)
            logger.info("local backend: removed stale group folder %s", entry)
