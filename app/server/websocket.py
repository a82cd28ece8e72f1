"""FanoutWebSocketProtocol: uvicorn's websockets-sansio protocol, leaner per connection.

Its changes, each measured (docs/architecture.md, "Below ASGI for the handshake and the
idle socket"): the opening handshake below; a Fanout socket session stepped in the
upgrade's callback, without ``run_asgi``'s and the middleware's frames, and given its
events by callback once accepted, so an idle socket holds no task (:meth:`_start_app`,
:meth:`take_events`, :meth:`run_ending`); keepalive deadlines on per-server queues
(:mod:`app.server.keepalive`); reference cycles broken when a socket is done
(:meth:`_release`).

The handshake: uvicorn 0.54 upgrades a connection by serialising the request head
httptools has already parsed back into bytes, feeding them to a fresh websockets
``ServerProtocol``, which parses them again (a generator per line), validates them,
builds a ``Response`` with its own ``Headers`` and formats a ``Date`` it then deletes;
the 101 is serialised from those objects. About 50 us of a 380 us connect on the 2-core
VM, and a parser generator, a ``Request``, a ``Response`` and their header lists kept for
the socket's life.

:class:`FanoutWebSocketProtocol` takes the head httptools parsed (through
:class:`app.server.http.FanoutHttpToolsProtocol`), checks it as the library would, and
writes the 101 from bytes. Extension offers (every browser offers permessage-deflate) are
negotiated by the library's own ``process_extensions`` with the extensions uvicorn offers.
Anything it does not recognise as a valid handshake (a bad key or extensions header, a
second ``Upgrade``, HTTP/1.0, another method) goes the library's way, byte for byte what
uvicorn does, so every refusal stays the library's. It also starts with the light
receive queue and writable event of :mod:`app.server.trims` rather than building the
asyncio ones to replace them. Swapped in on the uvicorn ``Config`` at lifespan start, like the HTTP
protocols of :mod:`app.server.http`.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import logging
import random
import struct
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_path_with_query_string,
)
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.datastructures import Headers as WsHeaders
from websockets.exceptions import InvalidHandshake
from websockets.extensions.base import Extension, ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

from app.server.conformance import CloseMidMessageProtocol
from app.server.keepalive import DeadlineQueue
from app.server.trims import EventCallback, ListEvent, ReceiveQueue

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ACCEPTED_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
)
_EXTENSIONS = b"sec-websocket-extensions"

Headers = list[tuple[bytes, bytes]]


def accept_key(headers: Headers) -> bytes | None:
    """``Sec-WebSocket-Accept`` for a plain valid handshake head, None for anything else.

    Valid as websockets 17's ``ServerProtocol.process_request`` sees it: one ``Upgrade:
    websocket``, a ``Connection`` listing ``upgrade``, one key of 16 base64 bytes, version
    13. ``headers`` are httptools' (names lower case). Extensions are negotiated apart
    (:meth:`FanoutWebSocketProtocol._negotiate`).
    """
    upgrade = connection = key = version = None
    for name, value in headers:
        # A second Upgrade, key or version: the library decides (returns None).
        if name == b"sec-websocket-key":
            if key is not None:
                return None
            key = value
        elif name == b"sec-websocket-version":
            if version is not None:
                return None
            version = value
        elif name == b"upgrade":
            if upgrade is not None:
                return None
            upgrade = value
        elif name == b"connection":
            connection = value if connection is None else connection + b"," + value
    if upgrade is None or upgrade.strip().lower() != b"websocket" or version != b"13":
        return None
    if connection is None:
        return None
    if connection.lower() != b"upgrade" and b"upgrade" not in [
        token.strip().lower() for token in connection.split(b",")
    ]:
        return None
    if key is None:
        return None
    try:
        # base64.b64decode(validate=True)'s check, without its regex and type dispatch.
        raw = binascii.a2b_base64(key, strict_mode=True)
    except binascii.Error:
        return None
    if len(raw) != 16:
        return None
    return binascii.b2a_base64(hashlib.sha1(key + _GUID).digest(), newline=False)


class FanoutWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with the handshake above (same ASGI contract).

    Its instance attributes are the per-connection ones only, at most 28, set in one
    order in ``__init__``: CPython 3.11 then keeps the instance dict's keys shared by
    every connection (about 300 bytes each), where uvicorn's 38 attributes make each
    instance own a full dict of 1.4 KB. What is the same for every connection of a
    server (its configuration) lives on a subclass made per ``Config`` by
    :func:`use_fanout_websocket_protocol`; the server state is read through properties.
    """

    has_direct_attributes = True
    """Every attribute :mod:`app.server.direct` uses is set by ``__init__`` (checked by
    tests/test_lean_handshake.py), so the direct path need not look for each."""

    # Per server: set on the subclass for_config() makes.
    config: Config
    app: Any
    logger: logging.Logger = logging.getLogger("uvicorn.error")
    root_path = ""
    asgi_version = "3.0"
    ping_interval: float | None = None
    ping_timeout: float | None = None
    close_timeout = 10.0
    _pings: DeadlineQueue
    """Every socket's next keepalive ping (:mod:`app.server.keepalive`), per server."""
    _pongs: DeadlineQueue
    """Every socket's pong deadline, per server."""
    _proxy: ProxyHeadersMiddleware | None = None
    """uvicorn's proxy-headers middleware around a stub app, when the server has it."""
    _conn_template: dict[str, Any]
    """What every plain handshake's websockets protocol holds alike (conformance.py)."""
    _negotiator: ServerProtocol
    """Negotiates extension offers as uvicorn's protocol would (``process_extensions``)."""
    _default_lines: _HeaderLines
    """The server's default headers as the 101's lines, per server."""
    _sessions: Callable[[Any, Any, Any], Awaitable[None] | None] | None = None
    """``FanoutApp.socket_session`` when the app under that middleware is Fanout's."""

    @classmethod
    def for_config(cls, config: Config) -> type[FanoutWebSocketProtocol]:
        """This class with ``config``'s settings as class attributes (same class name)."""
        if not config.loaded:
            config.load()  # pragma: no cover
        app = config.loaded_app
        proxy = None
        if type(app) is ProxyHeadersMiddleware:
            # Its scope rewriting, run to completion on each scope (the stub app returns
            # at once), so no middleware frame stays alive under the session.
            proxy = ProxyHeadersMiddleware(_scope_only)
            proxy.trusted_hosts = app.trusted_hosts
            app = app.app
        sessions = getattr(app, "socket_session", None)
        settings = {
            "_pings": DeadlineQueue(_ping),
            "_pongs": DeadlineQueue(_pong_missed),
            "_proxy": proxy,
            "_conn_template": CloseMidMessageProtocol.template(
                max_size=config.ws_max_size, logger=cls.logger
            ),
            "_default_lines": _HeaderLines(),
            "_sessions": sessions if callable(sessions) else None,
            "_negotiator": ServerProtocol(
                extensions=_offered_extensions(config), logger=logging.getLogger("uvicorn.error")
            ),
            "config": config,
            "app": config.loaded_app,
            "root_path": config.root_path,
            "asgi_version": config.asgi_version,
            "ping_interval": config.ws_ping_interval,
            "ping_timeout": config.ws_ping_timeout,
            "__qualname__": cls.__qualname__,
            "__module__": cls.__module__,
        }
        return type(cls.__name__, (cls,), settings)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # uvicorn's __init__ minus what upgrade() or the library path builds on demand
        # (the websockets protocol) and with trims.py's receive queue and event.
        self._server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = None  # type: ignore[assignment]
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.handshake_initiated = False
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.close_timer = None
        self.initial_response = None
        self.conn: ServerProtocol = None  # type: ignore[assignment]
        self.read_paused = False
        self.writable = ListEvent()
        self.writable.set()
        self.ping_timer = None
        self.pong_timer = None
        self.pending_ping_payload = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0
        self.frames = []
        self.curr_msg_data_type = "bytes"
        self._accept: bytes | None = None
        self.scope = None  # type: ignore[assignment]
        self._session: asyncio.Future[None] | _Returned | _Ending | None = None

    @property
    def connections(self) -> set[Any]:  # type: ignore[override]
        """The server's live connections."""
        return self._server_state.connections

    @property
    def tasks(self) -> set[asyncio.Task[None]]:  # type: ignore[override]
        """The server's running ASGI tasks."""
        return self._server_state.tasks

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        """``date`` and ``server`` as the server refreshes them every second."""
        return self._server_state.default_headers

    def _library_conn(self) -> None:
        """The websockets protocol exactly as uvicorn builds it (it parses the request)."""
        self.conn = ServerProtocol(
            extensions=_offered_extensions(self.config),
            max_size=self.config.ws_max_size,
            logger=logging.getLogger("uvicorn.error"),
        )

    def data_received(self, data: bytes) -> None:
        """Bytes from the socket; the first ones build the library's protocol (h11's way)."""
        if self.conn is None:
            self._library_conn()
        super().data_received(data)

    def upgrade(self, http: Any, transport: asyncio.Transport) -> None:
        """Take over ``transport`` from uvicorn's httptools protocol ``http``, whose
        request head (``scope`` headers, ``url``) is a WebSocket handshake."""
        scope = http.scope
        self.upgrade_head(
            transport,
            http.server,
            http.client,
            http.scheme,
            scope["method"],
            scope["http_version"],
            http.url,
            scope["headers"],
        )

    def upgrade_head(
        self,
        transport: asyncio.Transport,
        server: tuple[str, int] | None,
        client: tuple[str, int] | None,
        scheme: str,
        method: str,
        http_version: str,
        url: bytes,
        headers: Headers,
    ) -> None:
        """Take over ``transport``, whose request head (``headers`` with lower-case names,
        as httptools gives them) is a WebSocket handshake for ``url``."""
        self.connections.add(self)
        self.transport = transport
        self.server = server
        self.client = client
        self.scheme = "wss" if scheme == "https" else "ws"
        key = None
        if method == "GET" and http_version == "1.1" and url.isascii():
            key = accept_key(headers)
        if key is None:
            self._library_way(method, url, headers)
            return
        negotiated = self._negotiate(headers)
        if negotiated is None:
            self._library_way(method, url, headers)
            return
        answer, extensions = negotiated
        self._accept = b"Sec-WebSocket-Accept: " + key + b"\r\n" + answer
        self.conn = CloseMidMessageProtocol.opened(self._conn_template)
        if extensions:
            self.conn.extensions = extensions
        self.handshake_initiated = True
        raw_path, _, query_string = url.partition(b"?")
        subprotocols: list[str] = []
        for name, value in headers:
            if name == b"sec-websocket-protocol":
                subprotocols.extend(t.strip() for t in value.decode("latin-1").split(","))
        root_path = self.root_path
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": root_path,
            "path": root_path + _unquote(raw_path),
            "raw_path": root_path.encode("ascii") + raw_path,
            "query_string": query_string,
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        self.queue.put_nowait({"type": "websocket.connect"})
        self._start_app()

    def _library_way(self, method: str, url: bytes, headers: Headers) -> None:
        """uvicorn's way: the head as bytes, parsed and answered by the library."""
        output = [method.encode(), b" ", url, b" HTTP/1.1\r\n"]
        for name, value in headers:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        self.data_received(b"".join(output))

    def _negotiate(self, headers: Headers) -> tuple[bytes, list[Extension]] | None:
        """The ``Sec-WebSocket-Extensions`` answer line and the extensions accepted for
        what the client offered (browsers offer permessage-deflate), by the library's own
        ``process_extensions`` with the extensions uvicorn would offer; None for a header
        the library finds invalid (it then answers the handshake with its 400)."""
        offers = [value for name, value in headers if name == _EXTENSIONS]
        if not offers:
            return b"", []
        offered = WsHeaders([("Sec-WebSocket-Extensions", v.decode("latin-1")) for v in offers])
        try:
            answer, extensions = self._negotiator.process_extensions(offered)
        except InvalidHandshake:
            return None
        if answer is None:
            return b"", extensions
        return b"Sec-WebSocket-Extensions: " + answer.encode("latin-1") + b"\r\n", extensions

    def _start_app(self) -> None:
        """Run the application for this handshake: a Fanout socket session right here up
        to its first wait (:meth:`_start_session`), anything else as uvicorn does."""
        scope: Any = self.scope
        sessions = self._sessions
        session = None
        if sessions is not None:
            proxy = self._proxy
            if proxy is not None and _forwarded(scope["headers"]):
                _run_to_completion(proxy(scope, self.receive, self.send))
            session = sessions(scope, self.receive, self.send)
            if session is None:  # not a socket path: the app, minus the middleware done
                session = self._run_app(scope)
        if session is None:
            task = self.loop.create_task(self.run_asgi())
            task.add_done_callback(self.on_task_complete)
            self.tasks.add(task)
        else:
            self._start_session(cast(Coroutine[Any, Any, None], session))

    def _start_session(self, session: Coroutine[Any, Any, None]) -> None:
        """Step ``session`` here, in the upgrade's callback, until it first waits; only a
        session that waits gets a task.

        A session admits and accepts (or refuses) without waiting, the handshake's event
        being queued already, and one that then takes its events by callback
        (:meth:`take_events`) has returned: no task is made for it at all.
        """
        self._step(session, may_take_events=True)

    def _step(self, coroutine: Coroutine[Any, Any, None], *, may_take_events: bool = False) -> None:
        """Run ``coroutine`` until it returns or first waits; a task goes on with it then
        (its end handled by :meth:`_session_done`), else it is ended here."""
        try:
            waiting_on = coroutine.send(None)
        except StopIteration as done:
            if not (may_take_events and self._takes_events()):
                self._session = _RETURNED
                self._session_end(None, done.value)
            return
        except Exception as exc:  # what a task would have caught and reported
            self._session = _RETURNED
            self._session_end(exc, None)
            return
        task = asyncio.ensure_future(_resume(coroutine, waiting_on), loop=self.loop)
        task.add_done_callback(self._session_done)
        self.tasks.add(task)
        self._session = task

    async def _run_app(self, scope: Any) -> None:
        inner = cast(Any, self.app).app if self._proxy is not None else self.app
        await inner(scope, self.receive, self.send)

    def accept_now(self, subprotocol: str | None) -> bool:
        """Write the 101 of a plain handshake (:meth:`upgrade`'s own) now, as ``send`` would
        for ``websocket.accept``; False, doing nothing, for any other handshake or state."""
        queue = self.queue
        if self._accept is None or self.disconnected or not self.writable.is_set():
            return False
        if not isinstance(queue, ReceiveQueue) or queue.qsize() != 1:
            return False
        queue.get_nowait()  # websocket.connect, which the ASGI accept would have read
        self._send_101({"subprotocol": subprotocol})
        return True

    def take_events(self, on_event: Callable[[Any], None]) -> None:
        """Hand every event from now on to ``on_event`` instead of queueing it for
        ``receive``; the session's task may then return without the socket closing, and
        the session ends with :meth:`run_ending`."""
        pending = cast(ReceiveQueue, self.queue)
        self.queue = EventCallback(on_event)  # type: ignore[assignment]
        self._session = None
        # uvicorn pauses reading after each message until receive() takes it and never
        # pauses while it believes reading is paused: nothing calls receive() now.
        if self.read_paused and self.transport is not None:
            self.transport.resume_reading()
        self.read_paused = True
        # The handshake is over and the session has what it needs of the scope, which
        # refers to this protocol (socket.probe): dropped now rather than when it closes.
        self.scope = None  # type: ignore[assignment]
        while not pending.empty():
            on_event(pending.get_nowait())

    def _takes_events(self) -> bool:
        """Whether the session took its events by callback (:meth:`take_events`)."""
        return isinstance(cast(Any, self.queue), EventCallback)

    async def run_asgi(self) -> None:
        """uvicorn's ``run_asgi`` (the library's way in, and apps other than Fanout's),
        except that a session which took its events by callback leaves the socket open."""
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except BaseException as exc:  # as uvicorn's: logged, and a 500 if not accepted
            self._session_end(exc, None)
            return
        if not self._takes_events():
            self._session_end(None, result)

    def run_ending(self, ending: Coroutine[Any, Any, None]) -> None:
        """Run the last steps of a session that took its events by callback, soon (as a
        task only if they wait), then end the socket as uvicorn ends an application.

        Not right away: the event that ended the session may come from the middle of
        uvicorn's handling of a close frame, which still has the reply to write.
        """
        self._session = _ENDING
        self.loop.call_soon(self._step, ending)

    def _session_done(self, task: asyncio.Future[None]) -> None:
        """What uvicorn's ``run_asgi`` does after the application returned or raised."""
        self.tasks.discard(task)
        if task is not self._session:
            # The handshake part of a session that took its events by callback
            # (take_events): the socket lives on, and run_ending's task ends it.
            if not task.cancelled() and (exc := task.exception()) is not None:
                self.logger.error("Exception in ASGI application\n", exc_info=exc)
            return
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        self._session_end(exc, None if exc is not None else task.result())

    def _session_end(self, exc: BaseException | None, result: Any) -> None:
        """What uvicorn's ``run_asgi`` does after the application returned ``result`` or
        raised ``exc``."""
        if exc is not None:
            if not isinstance(exc, ClientDisconnected):
                self.logger.error("Exception in ASGI application\n", exc_info=exc)
                self.send_500_response()
        elif not self.handshake_complete:
            self.logger.error("ASGI callable returned without completing handshake.")
            self.send_500_response()
        elif result is not None:
            self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        # connection_lost may have released the socket already (its task was done, this
        # callback not yet run); uvicorn closes a transport that is closed anyway then.
        if self.close_timer is None and self.transport is not None:
            self.transport.close()
        if self.disconnected:
            self._release()

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's ``connection_lost``; once the session (started by :meth:`upgrade`, not
        the library's way) has ended too, :meth:`_release`."""
        super().connection_lost(exc)
        session = self._session
        if session is not None and session.done():
            self._release()

    def _release(self) -> None:
        """Break the reference cycles a finished socket leaves (the protocol and its
        transport, scope and websockets parser generator refer to each other), so it is
        freed when its last reference goes rather than by a full collection of the garbage
        collector, which at thousands of connections takes a hundred milliseconds or more
        and ran several times per 5,000 connects."""
        conn = self.conn
        if conn is not None:
            conn.parser = None  # type: ignore[assignment]  # its generator holds conn
        self.scope = None  # type: ignore[assignment]  # holds the protocol (socket.probe)
        self.transport = None  # type: ignore[assignment]  # uvloop's holds the protocol

    def schedule_ping(self) -> None:
        """uvicorn's next ping, on the server's ping queue instead of a timer of its own."""
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.ping_timer = self._pings.add(self.loop, delay, self)  # type: ignore[assignment]

    def send_keepalive_ping(self) -> None:
        """uvicorn's keepalive ping, with its pong deadline on the server's pong queue."""
        self.ping_timer = None
        if self.close_sent or self.transport.is_closing():
            return
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.ping_timeout is not None:
            deadline = self._pongs.add(self.loop, self.ping_timeout, self)
            self.pong_timer = deadline  # type: ignore[assignment]
        else:
            self.schedule_ping()

    async def receive(self) -> Any:
        """uvicorn's ``receive`` and the queue's ``get`` in one coroutine frame, not two."""
        queue = cast(ReceiveQueue, self.queue)
        while queue.empty():
            await queue.arrival()
        message = queue.get_nowait()
        if self.read_paused and queue.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: Any) -> None:
        """uvicorn's ``send``, with the 101 of a plain handshake written from bytes."""
        if self._accept is not None and message["type"] == "websocket.accept":
            await self.writable.wait()
            self._send_101(message)
            return
        if self._accept is not None and message["type"] in (
            "websocket.close",
            "websocket.http.response.start",
        ):
            # A refusal: the library answers it, so it needs the response it would have made.
            self._library_refusal()
        await super().send(message)

    def _send_101(self, message: Any) -> None:
        accept, self._accept = self._accept, None
        if self.disconnected:
            raise ClientDisconnected()
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(
                '%s - "WebSocket %s" [accepted]',
                get_client_addr(self.scope),
                get_path_with_query_string(self.scope),
            )
        assert accept is not None  # send() checked it
        parts = [_ACCEPTED_HEAD, accept, self._default_lines.of(self.default_headers)]
        for name, value in message.get("headers", ()):
            parts += [name.lower(), b": ", value, b"\r\n"]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            parts += [b"Sec-WebSocket-Protocol: ", subprotocol.encode("latin-1"), b"\r\n"]
        parts.append(b"\r\n")
        if not self.transport.is_closing():
            self.handshake_complete = True
            self.transport.write(b"".join(parts))
            self.start_keepalive()

    def _library_refusal(self) -> None:
        """Before a plain handshake is refused: the library's protocol, still CONNECTING,
        which uvicorn's own ``send`` asks for the refusal's bytes."""
        self._accept = None
        self._library_conn()

    def send_500_response(self) -> None:
        """uvicorn's 500 for a handshake the app never answered."""
        if self._accept is not None:
            self._library_refusal()
        super().send_500_response()


def _offered_extensions(config: Config) -> list[ServerExtensionFactory]:
    """The extensions uvicorn 0.54's websockets-sansio protocol offers, as it builds them."""
    if not config.ws_per_message_deflate:
        return []
    return [
        ServerPerMessageDeflateFactory(
            server_max_window_bits=12,
            client_max_window_bits=12,
            compress_settings={"memLevel": 5},
        )
    ]


class _HeaderLines:
    """A server's default headers (``date``, ``server``) as header lines, made again only
    when uvicorn replaces the list (each second, for the date), not for every 101."""

    __slots__ = ("_lines", "_source")

    def __init__(self) -> None:
        self._source: list[tuple[bytes, bytes]] | None = None
        self._lines = b""

    def of(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """``headers`` as ``name: value`` lines, names lower case as uvicorn writes them."""
        if headers is not self._source:
            # Held, so its id cannot be reused by a later list while it is compared.
            self._lines = b"".join(
                name.lower() + b": " + value + b"\r\n" for name, value in headers
            )
            self._source = headers
        return self._lines


class _Returned:
    """The ``_session`` of a socket whose session ended without a task."""

    __slots__ = ()

    def done(self) -> bool:
        """Always: it returned."""
        return True


class _Ending:
    """The ``_session`` of a socket whose session's last steps are about to run."""

    __slots__ = ()

    def done(self) -> bool:
        """Never: they have not run yet."""
        return False


_RETURNED = _Returned()
_ENDING = _Ending()


@types.coroutine
def _resume(coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Go on with ``coroutine``, stepped already until it yielded ``waiting_on``, as a
    task would: what the task sends or throws in goes on to the coroutine."""
    while True:
        try:
            yield waiting_on
        except BaseException as exc:  # cancellation, forwarded
            try:
                waiting_on = coroutine.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coroutine.send(None)
            except StopIteration:
                return


def _ping(protocol: FanoutWebSocketProtocol) -> None:
    protocol.send_keepalive_ping()


def _pong_missed(protocol: FanoutWebSocketProtocol) -> None:
    protocol.keepalive_timeout()


async def _scope_only(scope: Any, receive: Any, send: Any) -> None:
    """The stub under the proxy-headers middleware: its scope changes are all we want."""


def _run_to_completion(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (the middleware around :func:`_scope_only`)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("the proxy-headers middleware suspended")


_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})
"""The only headers uvicorn 0.54's proxy-headers middleware reads: without them it leaves
the scope as it is, so the handshake need not go through it."""


def _forwarded(headers: Headers) -> bool:
    """Whether ``headers`` hold a header the proxy-headers middleware acts on."""
    for name, _value in headers:  # noqa: SIM110 (a loop: no generator per handshake)
        if name in _FORWARDED:
            return True
    return False


def _unquote(raw_path: bytes) -> str:
    path = raw_path.decode("ascii")
    return unquote(path) if "%" in path else path


def use_fanout_websocket_protocol(config: Config) -> bool:
    """Make ``config``'s server use :class:`FanoutWebSocketProtocol` if it uses uvicorn's
    websockets-sansio protocol (the default); True if it does now."""
    current = getattr(config, "ws_protocol_class", None)
    fanouts = isinstance(current, type) and issubclass(current, FanoutWebSocketProtocol)
    if not fanouts and current is not WebSocketsSansIOProtocol:
        return False
    # Made anew for each server start on this Config: the keepalive queues belong to a loop.
    config.ws_protocol_class = FanoutWebSocketProtocol.for_config(config)
    return True
