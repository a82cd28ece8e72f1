"""GroupFolder's clean-up of crashed runs, which every worker of a new run does at startup.

The workers of one run start together, so each may find a leftover another is removing at
that moment; that race must never fail a worker's startup (a failed startup stops the whole
supervisor, and clients then see their connections reset).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.services.backends import local_folder
from app.services.backends.local_folder import GroupFolder
from tests.support.leftovers import dead_pid, leave_socket_file


def _crashed_run(base: Path) -> tuple[int, Path]:
    """A supervisor's folder with a socket, both of processes that are gone."""
    dead = dead_pid()
    crashed = base / f"sup-{dead}"
    crashed.mkdir(parents=True)
    leave_socket_file(crashed / f"{dead}.sock")
    return dead, crashed


def test_a_crashed_runs_folder_is_removed_and_counted(tmp_path: Path) -> None:
    _dead, crashed = _crashed_run(tmp_path)
    folder = GroupFolder(tmp_path, "tests", pid=1)
    folder.prepare()
    assert not crashed.exists()
    assert folder.stale_removed == 1
    assert folder.path.is_dir()


def test_a_folder_a_sibling_removes_meanwhile_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead, crashed = _crashed_run(tmp_path)
    alive = local_folder.pid_alive

    def sibling_removes_it_first(pid: int) -> bool:
        if pid == dead:  # asked about the supervisor: the sibling's rmtree wins the race
            shutil.rmtree(crashed)
        return alive(pid)

    monkeypatch.setattr(local_folder, "pid_alive", sibling_removes_it_first)
    folder = GroupFolder(tmp_path, "tests", pid=1)
    folder.prepare()  # raised FileNotFoundError when the folder was read after the check
    assert not crashed.exists()
    assert folder.stale_removed == 0, "the sibling removed it, not this worker"
    assert folder.path.is_dir()


def test_a_file_named_like_a_folder_is_left_alone(tmp_path: Path) -> None:
    stray = tmp_path / f"sup-{dead_pid()}"
    stray.write_text("not a run's folder")
    GroupFolder(tmp_path, "tests", pid=1).prepare()
    assert stray.read_text() == "not a run's folder"
