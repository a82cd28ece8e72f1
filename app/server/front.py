"""FrontProtocol: a WebSocket handshake's request head read in Python, the rest uvicorn's.

uvicorn's httptools protocol costs a plain handshake about a quarter of the server's CPU
for it (docs/benchmarks.md, "Issue 14: the connect path's front"): the protocol object
and its 20-odd attributes, the peer and local addresses, httptools' callbacks for the
request line and each header, an HTTP scope with a copy of the lifespan state, the checks
for an upgrade, and an exception to say "upgrade". For a connection whose first bytes are
a complete, plain ``GET`` upgrade head, :class:`FrontProtocol` splits the head itself and
hands it to Fanout's WebSocket protocol (``upgrade_head``), as uvicorn's protocol would
have. Everything else (any other request, a head it does not find plain, a head longer
than :data:`MAX_HEAD`, bytes after the head) is handed, with the bytes read so far, to
uvicorn's protocol (:class:`~app.server.http.FanoutHttpToolsProtocol`), which then serves
the connection as before. The head deadline of :mod:`app.server.http` applies from the
connection's start either way.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.utils import is_ssl
from uvicorn.server import ServerState

from app.server.addresses import local_address, peer_address
from app.server.http import FanoutHttpToolsProtocol, _HeadTimer

MAX_HEAD = 16_384
"""Bytes of request head read here; a longer head goes to uvicorn's protocol."""

_TARGET = re.compile(rb"/[!-~]*")
"""An origin-form request target: printable ASCII, no space."""
_HEADER_LINES = re.compile(rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*)*")
"""Every header line after the request line: a name (RFC 9110 token), a colon and a value
without control characters (tab allowed). One match for the whole head: a regex per line
cost more than the rest of the check."""
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
"""Headers that give a request a body: such a request is uvicorn's to read."""

Headers = list[tuple[bytes, bytes]]


def plain_upgrade(head: bytes) -> tuple[bytes, Headers] | None:
    """The target and headers (names lower case) of ``head`` (without its blank line) if it
    is a plain WebSocket upgrade as uvicorn's httptools protocol sees one: ``GET`` in
    HTTP/1.1, well-formed header lines, the last ``Connection`` listing ``upgrade`` and the
    last ``Upgrade`` saying ``websocket``, and no body; None for anything else."""
    line_end = head.find(b"\r\n")
    if line_end < 0:
        line_end = len(head)
    request_line = head[:line_end].split(b" ")
    if len(request_line) != 3:
        return None
    method, target, version = request_line
    if method != b"GET" or version != b"HTTP/1.1" or not _TARGET.fullmatch(target):
        return None
    if not _HEADER_LINES.fullmatch(head, line_end):
        return None  # also a folded line, which starts with a space
    headers: Headers = []
    connection: list[bytes] = []
    upgrade = None
    for line in head[line_end + 2 :].split(b"\r\n") if line_end < len(head) else ():
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        name = name.lower()
        if name == b"connection":
            connection = [token.strip().lower() for token in value.split(b",")]
        elif name == b"upgrade":
            upgrade = value.lower()
        elif name in _FRAMING:
            return None
        headers.append((name, value))
    if upgrade != b"websocket" or b"upgrade" not in connection:
        return None
    return target, headers


class FrontProtocol(_HeadTimer):
    """A connection until its first request head is read: a plain WebSocket upgrade goes
    to Fanout's WebSocket protocol from here, anything else to uvicorn's HTTP protocol.

    It stays the transport's protocol afterwards and passes every callback on to the one it
    chose, rather than ``transport.set_protocol()``: uvloop's stops and restarts reading
    there, two epoll changes (``io_uring_enter`` system calls) on every connect, where a
    forwarded ``data_received`` costs one Python call per read.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self._read = b""
        self._inner: asyncio.Protocol | None = None
        """The protocol the connection went to, which every callback now goes to."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.client = peer_address(transport)
        # In uvicorn's set of connections (typed for its own protocols), so that a server
        # shutdown closes a connection still sending its head.
        cast(Any, self.server_state.connections).add(self)
        super().connection_made(transport)  # the head deadline

    def connection_lost(self, exc: Exception | None) -> None:
        inner = self._inner
        if inner is not None:
            inner.connection_lost(exc)
            return
        self.server_state.connections.discard(self)
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        """The peer's end of the stream: the chosen protocol's to answer."""
        inner = self._inner
        return inner.eof_received() if inner is not None else None

    def pause_writing(self) -> None:
        """The transport's buffer is full: the chosen protocol's backpressure."""
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        """The transport's buffer drained."""
        if self._inner is not None:
            self._inner.resume_writing()

    def shutdown(self) -> None:
        """uvicorn's server shutdown, for a connection that has not sent its head yet."""
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        """Bytes of the head: the connection goes one way or the other once it is read;
        after that, bytes for the protocol it went to."""
        inner = self._inner
        if inner is not None:
            inner.data_received(data)
            return
        read = self._read + data if self._read else data
        end = read.find(b"\r\n\r\n")
        if end < 0:
            if len(read) > MAX_HEAD or not read.startswith(b"GET "[: len(read)]):
                self._to_http(read)  # not a handshake, or not one to read here
            else:
                self._read = read  # the rest of the head is on its way
            return
        self._read = b""
        found = plain_upgrade(read[:end]) if end + 4 == len(read) else None
        upgrade_head = getattr(self.config.ws_protocol_class, "upgrade_head", None)
        if found is None or upgrade_head is None:
            self._to_http(read)
            return
        self._head_complete()
        self.server_state.connections.discard(self)
        transport = self.transport
        target, headers = found
        protocol = self.config.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config,
            server_state=self.server_state,
            app_state=self.app_state,
            _loop=self.loop,
        )
        scheme = "https" if is_ssl(transport) else "http"
        server = local_address(transport)
        self._forward_to(protocol)  # before the 101's write, which may pause writing
        protocol.upgrade_head(  # type: ignore[union-attr]
            transport, server, self.client, scheme, "GET", "1.1", target, headers
        )

    def _to_http(self, read: bytes) -> None:
        """Hand the connection, and ``read``, to uvicorn's HTTP protocol; its head
        deadline keeps the time this connection has left."""
        self._read = b""
        self.server_state.connections.discard(self)
        http = FanoutHttpToolsProtocol(
            config=self.config,
            server_state=self.server_state,
            app_state=self.app_state,
            _loop=self.loop,
        )
        http.connection_made(self.transport)
        http._take_head_deadline(self)
        self._forward_to(http)
        http.data_received(read)

    def _forward_to(self, protocol: asyncio.Protocol) -> None:
        """Pass every callback from now on to ``protocol``, which holds the transport; this
        object no longer refers to it (no cycle with uvloop's transport to collect)."""
        self._inner = protocol
        self.transport = None  # type: ignore[assignment]


def use_front_protocol(config: Config) -> bool:
    """Put :class:`FrontProtocol` before uvicorn's httptools protocol where the server uses
    Fanout's httptools and WebSocket protocols (the default); True if it does now."""
    if config.http_protocol_class is not FanoutHttpToolsProtocol:
        return config.http_protocol_class is FrontProtocol
    if getattr(config.ws_protocol_class, "upgrade_head", None) is None:
        return False
    config.http_protocol_class = FrontProtocol
    return True
