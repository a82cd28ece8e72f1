"""What a crashed run leaves behind: the pid of a process that is gone, an orphaned socket."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped), so nothing runs under it."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leave_socket_file(path: Path) -> None:
    """A socket file nobody listens on, as a SIGKILLed worker leaves behind."""
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
