"""A deadline for the request head: uvicorn's HTTP protocols with a slowloris guard.

uvicorn 0.54 arms no timer on a connection until it has answered a request
(``timeout_keep_alive`` starts after a response, and any byte received cancels it), so a
client that opens a connection and never finishes its request line and headers, silent
or trickling one byte at a time, holds the connection forever. The subclasses here add a
deadline for each connection when it is made (and again after each response while the
connection waits for the next request) to the server's queue of them (one timer for all),
cancel it when a request's headers are complete (for a WebSocket upgrade that is before
the application sees the handshake), and close the connection when it is due, reporting
it through :class:`HandshakeDeadline`.

No command-line flag is needed: :func:`use_deadline_protocols` runs when the application's
lifespan starts, before uvicorn accepts a connection, and swaps the protocol class on the
uvicorn ``Config`` that drives the lifespan (each worker has its own). The deadline itself
reaches the protocols through the ASGI lifespan state (``app_state`` in uvicorn), which
the application fills at start-up; a protocol that finds none behaves exactly like
uvicorn's own. Tested with uvicorn 0.54's httptools and h11 protocols (the pinned
version); any other protocol class, or a server that is not uvicorn, is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.logging_setup import LOGGER_NAME
from app.server.keepalive import Deadline, DeadlineQueue

DEADLINE_KEY = "fanout.handshake_deadline"
"""Lifespan state key of the :class:`HandshakeDeadline` the protocols read."""

logger = logging.getLogger(LOGGER_NAME)


class HandshakeDeadline(NamedTuple):
    """How long a connection may take to send a request's head, and who hears of misses."""

    timeout: float
    """Seconds from the connection (or the previous response) to the end of the headers."""
    expired: Callable[[str, float], None]
    """Called with the peer (``host:port``) and ``timeout`` after the connection is closed."""
    pending: DeadlineQueue
    """Every connection's head deadline, on one timer for the server (every connection
    waits the same ``timeout``): a timer per connection cost a uvloop handle and its libuv
    timer, made and cancelled on every connect (1.3-1.7 us against 0.4-0.45 us)."""


def handshake_deadline(timeout: float, expired: Callable[[str, float], None]) -> HandshakeDeadline:
    """A :class:`HandshakeDeadline` with its own queue; ``pending.close()`` it at shutdown."""
    return HandshakeDeadline(timeout, expired, DeadlineQueue(_head_missed))


def _head_missed(protocol: _HeadTimer) -> None:
    protocol._head_deadline_missed()


class _HeadTimer(asyncio.Protocol):
    """The timer both protocols share: armed when a connection is made, cancelled when a
    head is complete or the connection is lost, and what happens when it fires. First in
    each protocol's bases, so its connection callbacks wrap uvicorn's."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    app_state: dict[str, Any]
    client: tuple[str, int] | None
    _head_timer: Deadline | None = None
    _deadline: HandshakeDeadline | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.app_state.get(DEADLINE_KEY)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_complete()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        deadline = self._deadline
        if deadline is not None and self._head_timer is None:
            self._head_timer = deadline.pending.add(self.loop, deadline.timeout, self)

    def _take_head_deadline(self, other: _HeadTimer) -> None:
        """Go on with ``other``'s head deadline, due when it was (a connection handed over
        from one protocol to another keeps the time it has left), instead of this one's."""
        self._head_complete()
        timer, other._head_timer = other._head_timer, None
        if timer is not None:
            timer.owner = self
        self._head_timer = timer

    def _head_complete(self) -> None:
        timer = self._head_timer
        if timer is not None:
            deadline = self._deadline
            assert deadline is not None  # a timer is only ever taken from its queue
            deadline.pending.cancel(timer)
            self._head_timer = None

    def _head_deadline_missed(self) -> None:
        self._head_timer = None
        transport, deadline = self.transport, self._deadline
        if deadline is None or transport.is_closing():
            return
        if transport.get_write_buffer_size():
            transport.abort()  # the peer does not read either: do not wait for a flush
        else:
            transport.close()
        client = self.client
        deadline.expired(f"{client[0]}:{client[1]}" if client else "-", deadline.timeout)


class FanoutHttpToolsProtocol(_HeadTimer, HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's head."""

    def on_headers_complete(self) -> None:
        self._head_complete()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        """Hand the parsed handshake to a WebSocket protocol that takes it as parsed
        (:class:`app.server.websocket.FanoutWebSocketProtocol`), else do uvicorn's upgrade."""
        upgrade = getattr(self.ws_protocol_class, "upgrade", None)
        if upgrade is None:
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        protocol = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.upgrade(self, self.transport)  # type: ignore[union-attr]
        self.transport.set_protocol(protocol)

    def on_response_complete(self) -> None:
        waits_for_a_request = not self.pipeline  # else the next request is in already
        super().on_response_complete()
        if waits_for_a_request and not self.transport.is_closing():
            self._arm_head_deadline()


class FanoutH11Protocol(_HeadTimer, H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self.conn.their_state is not h11.IDLE:
            self._head_complete()  # h11 produced the request: its head is complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_head_deadline()


_OURS: dict[type[Any], type[Any]] = {
    HttpToolsProtocol: FanoutHttpToolsProtocol,
    H11Protocol: FanoutH11Protocol,
}
"""uvicorn's protocol classes, each with the subclass that replaces it."""


def uvicorn_config(lifespan_receive: Any) -> Config | None:
    """The uvicorn ``Config`` behind a lifespan ``receive`` (None on another server).

    uvicorn's lifespan ``receive`` is a bound method of its lifespan object, which holds
    the server's ``Config``; uvicorn builds each connection's protocols from it and starts
    listening only after the lifespan started.
    """
    config = getattr(getattr(lifespan_receive, "__self__", None), "config", None)
    return config if isinstance(config, Config) else None


def use_deadline_protocols(lifespan_receive: Any) -> bool:
    """Make the uvicorn server behind a lifespan ``receive`` use the protocols above.

    uvicorn's lifespan ``receive`` is a bound method of its lifespan object, which holds
    the server's ``Config``; uvicorn builds each connection's protocol from
    ``config.http_protocol_class`` and starts listening only after the lifespan started.
    Returns whether the deadline is enforced (False on another server, or on a uvicorn
    protocol class this module does not know, which is then left alone with a warning).
    """
    config = uvicorn_config(lifespan_receive)
    if config is None:
        return False
    current = getattr(config, "http_protocol_class", None)
    if isinstance(current, type) and issubclass(current, _HeadTimer):
        return True  # ours already (a second start on this Config, or app.server.front's)
    replacement = _OURS.get(current) if isinstance(current, type) else None
    if replacement is None:
        logger.warning(
            "FANOUT_HANDSHAKE_TIMEOUT is not enforced: uvicorn's HTTP protocol %r is not "
            "one Fanout knows (httptools or h11)",
            current,
        )
        return False
    config.http_protocol_class = replacement
    return True
