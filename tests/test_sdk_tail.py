"""``python -m fanout_sdk.tail``: run as a user runs it, against a real server."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

import pytest

from fanout_sdk import FanoutApi
from fanout_sdk.frames import Publication
from fanout_sdk.tail import format_publication
from tests.support.servers import ROOT, ServerProcess

API_KEY = "sdk-tail-key"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess({"FANOUT_API_KEYS": API_KEY}).start()
    yield proc
    proc.stop()


class Lines:
    """The lines a stream gives, read by a thread (a pipe's buffer hides them from select)."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def next(self, within: float = 10.0) -> str:
        """The next line, waiting at most ``within`` seconds."""
        line = self._lines.get(timeout=within)
        self.seen.append(line)
        return line

    def wait_for(self, text: str, within: float = 15.0) -> None:
        """Read lines until one holds ``text``."""
        deadline = time.monotonic() + within
        while not any(text in line for line in self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r}; got {self.seen!r}"
            try:
                self.next(left)
            except queue.Empty:
                continue


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_tail_prints_one_line_per_publication_and_exits_cleanly_on_a_signal(
    server: ServerProcess, sig: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout_sdk.tail", server.ws("/ws"), "tail.news"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        err.wait_for("subscribed to tail.news")
        with FanoutApi(server.base, API_KEY) as api:
            api.publish("tail.news", {"a": 1, "b": [1, 2]})
            api.publish("tail.news", text="hello there")
            api.publish("tail.news", binary=b"\x00\x01\xfe")
        lines = [out.next() for _ in range(3)]
        assert lines == ['{"a":1,"b":[1,2]}\n', "hello there\n", "AAH+\n"]
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        time.sleep(0.2)  # the reader threads take the last lines
        assert not any("Traceback" in line for line in err.seen + out.seen), err.seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tail_says_why_and_exits_1_when_refused_for_good(server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fanout_sdk.tail", server.ws("/ws"), "bad:channel"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "400" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_binary_can_be_printed_as_hex() -> None:
    publication = Publication("c", "binary", binary=b"\x00\xff")
    assert format_publication(publication, "hex") == "00ff"
    assert format_publication(Publication("c", "json", data="é")) == '"é"'
