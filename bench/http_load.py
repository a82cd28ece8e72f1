"""Keep-alive HTTP/1.1 load from raw asyncio clients: one request in flight per connection,
the same request bytes every time, responses parsed from their status line and
``Content-Length`` only (bodies are counted, never decoded).

Driven by the ``api`` command of a client process (``bench.client.Worker.cmd_api``); every
loop is bounded by a deadline and a request count.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

Cmd = dict[str, Any]

API_KEY = "bench-key"
"""The key the suite's broker servers are started with (``FANOUT_API_KEYS``)."""


def publish_body(channel: str, data: bytes) -> bytes:
    """``{"channel":C,"data":D}`` with ``data`` spliced in as given (JSON bytes)."""
    return b'{"channel":%b,"data":%b}' % (json.dumps(channel).encode(), data)


def build_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """One HTTP/1.1 request, keep-alive (the default), with ``Content-Length`` for a body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ResponseParser:
    """Incremental parser of HTTP/1.1 responses on one keep-alive connection.

    ``feed`` returns the status codes of the responses completed by the new bytes. Only
    ``Content-Length`` framing is understood (what uvicorn sends for these endpoints); a
    chunked or unframed response raises ``ValueError``.
    """

    __slots__ = ("_buf", "_need", "_status", "body_bytes")

    def __init__(self) -> None:
        self._buf = b""
        self._need = -1  # body bytes still missing of the current response, -1: in headers
        self._status = 0
        self.body_bytes = 0

    def feed(self, data: bytes) -> list[int]:
        buf = self._buf + data if self._buf else data
        done: list[int] = []
        i = 0
        n = len(buf)
        while True:
            if self._need < 0:
                end = buf.find(b"\r\n\r\n", i)
                if end < 0:
                    break
                head = buf[i:end]
                try:
                    self._status = int(head[9:12])
                except ValueError as exc:
                    raise ValueError(f"bad status line: {head[:40]!r}") from exc
                k = head.lower().find(b"\r\ncontent-length:")
                if k < 0:
                    raise ValueError("response without Content-Length")
                stop = head.find(b"\r\n", k + 2)
                self._need = int(head[k + 17 : stop if stop >= 0 else len(head)])
                i = end + 4
            if n - i < self._need:
                break
            i += self._need
            self.body_bytes += self._need
            self._need = -1
            done.append(self._status)
        self._buf = buf[i:] if i < n else b""
        return done


class HttpConn(asyncio.Protocol):
    """One keep-alive connection sending ``request`` again as soon as a response is in."""

    def __init__(self, load: HttpLoad) -> None:
        self.load = load
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0
        self.in_flight = False
        self.closed = False
        self.lost_unexpectedly = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            statuses = self.parser.feed(data)
        except ValueError as exc:
            self.load.errors[f"parse: {exc}"] += 1
            self.abort()
            return
        if statuses:
            self.in_flight = False
            self.load.on_responses(self, statuses)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.closing:
            self.lost_unexpectedly = True

    def send_request(self) -> None:
        if self.transport is not None and not self.closed:
            self.sent_at = time.monotonic_ns()
            self.in_flight = True
            self.transport.write(self.load.request)

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


class HttpLoad:
    """A process's share of the load: ``connections`` keep-alive connections, each with one
    request in flight, from ``start`` until ``stop_at`` or ``max_requests`` sent."""

    def __init__(self, request: bytes, max_requests: int) -> None:
        self.request = request
        self.max_requests = max_requests
        self.conns: list[HttpConn] = []
        self.sent = 0
        self.done = 0
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.latencies: list[int] = []
        self.recording = False
        self.active = False
        self.stop_at = 0.0
        self.window_done = 0
        self.window_statuses: Counter[int] = Counter()

    def on_responses(self, conn: HttpConn, statuses: list[int]) -> None:
        now = time.monotonic_ns()
        self.done += len(statuses)
        for s in statuses:
            self.statuses[s] += 1
        if self.recording:
            self.latencies.append(now - conn.sent_at)
            self.window_done += len(statuses)
            for s in statuses:
                self.window_statuses[s] += 1
        if self.active:
            if self.sent >= self.max_requests or time.monotonic() >= self.stop_at:
                self.active = False
                return
            self.sent += 1
            conn.send_request()

    def start(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self.active = True
        for c in self.conns:
            if self.sent >= self.max_requests:
                break
            self.sent += 1
            c.send_request()

    async def drain(self, limit_s: float) -> None:
        """Wait (bounded) for the requests still in flight after the stop."""
        deadline = time.monotonic() + limit_s
        while any(c.in_flight and not c.closed for c in self.conns):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
