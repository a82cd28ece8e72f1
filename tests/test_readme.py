"""The README's terminal example, run as written against a real server.

The only change to each command is the port: ``localhost:8000`` becomes the test server's.
The interactive client runs in a pseudo-terminal, as a person types into it. (wscat, a
Node package, is not installed for the tests; its line is the same conversation.)
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.servers import ROOT, ServerProcess

README = ROOT / "README.md"


def _commands(section: str) -> list[str]:
    """The commands of the first bash block under ``## <section>``, one per shell command."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.DOTALL)
    assert block is not None, f"no bash block under {section!r}"
    commands: list[str] = []
    pending = ""
    for line in block.group(1).splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        commands.append(pending)
        pending = ""
    assert not pending, f"unterminated command: {pending!r}"
    return commands


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess().start()
    yield proc
    proc.stop()


def _on(server: ServerProcess, command: str) -> str:
    assert "localhost:8000" in command, command
    return command.replace("localhost:8000", f"localhost:{server.port}")


def _find(commands: list[str], start: str) -> str:
    found = [c for c in commands if c.startswith(start)]
    assert len(found) == 1, (start, commands)
    return found[0]


def test_the_scripted_client_prints_the_reply(server: ServerProcess) -> None:
    command = _on(server, _find(_commands("Talk to it from a terminal"), "python -c "))
    # Run from a script, with no terminal and nothing on stdin.
    done = subprocess.run(
        ["bash", "-c", command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi\n"
    assert done.stderr == ""  # no deprecation warning, no traceback


def test_the_stats_command_prints_json(server: ServerProcess) -> None:
    command = _on(server, _find(_commands("Talk to it from a terminal"), "curl "))
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "connections" in json.loads(done.stdout)


def _interactive(command: str, typed: str, expect: str, timeout: float = 15.0) -> str:
    """Run ``command`` in a pseudo-terminal, type ``typed``; the output once ``expect`` shows."""
    main, child = os.openpty()
    proc = subprocess.Popen(
        ["bash", "-c", command], stdin=child, stdout=child, stderr=child, close_fds=True
    )
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + timeout
        while b"Connected" not in seen and time.monotonic() < deadline:
            seen += _read(main, deadline)
        os.write(main, typed.encode() + b"\r")
        while expect.encode() not in seen and time.monotonic() < deadline:
            seen += _read(main, deadline)
        os.write(main, b"\x04")  # Ctrl-D: leave
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    return seen.decode(errors="replace")


def _read(fd: int, deadline: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:  # the other side closed
        return b""


def test_the_interactive_websockets_client_shows_the_reply(server: ServerProcess) -> None:
    command = _on(server, _find(_commands("Talk to it from a terminal"), "python -m websockets "))
    output = _interactive(command, "hello from a terminal", "< hello from a terminal")
    assert "< hello from a terminal" in output, output
