"""An asyncio client for ``fanout.v1`` (``WS /ws``) on the ``websockets`` library.

What it does, as the JavaScript SDK does it:

- Connects with a token, or an async ``get_token()`` callback that is asked again for a
  new token before the current one expires (from the ``ttl`` the server sends) and after
  a close with 4001.
- Reconnects after any loss with full-jitter exponential backoff (a random delay between 0
  and ``min_delay * 2**attempt``, capped at ``max_delay``); a close 1012 whose reason
  carries ``{"reconnect_after_ms": N}`` waits at least N ms. It never reconnects after a
  close 4500-4999 (invalid token, protocol error, forbidden, limit), nor after a handshake
  refused with 400, 401, 403 or 404: the client is then closed, and says why.
- Subscribes every channel again after a reconnect, with ``since`` (the last offset seen
  and the epoch) on channels that have history, and drops any publication whose offset it
  has already delivered, so a recovered stream has no duplicates.
- Sends an application-level ``ping`` when nothing arrived for ``ping_interval`` seconds
  and reconnects when no answer comes within ``ping_timeout``.

Publications reach the program by async iteration over a :class:`Subscription`
(``async for pub in sub``); connection state by the ``on_state`` callback; subscription
events (subscribed, join, leave, gap, unsubscribed) by the subscription's ``on_event``.

Slow consumers: each subscription keeps at most ``queue_size`` publications that the
program has not read yet. When a new one arrives at a full queue, the oldest waiting one
is dropped, :attr:`Subscription.dropped` counts it, and the first drop of a run of drops
is reported as a :class:`Gap` event with reason ``"client_queue_overflow"`` (and logged).
Memory stays bounded and the freshest data wins, as on a live feed; a program that must
see everything reads faster, raises ``queue_size``, or reads the missing offsets from
history.

Every task the client starts is its own and is cancelled by :meth:`Client.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Final, Self

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State as SocketState

from fanout_sdk.errors import (
    ClientClosed,
    CommandError,
    CommandTimeout,
    DisconnectedError,
    SubscriptionEnded,
)
from fanout_sdk.frames import (
    MAX_ID,
    SUBPROTOCOL,
    ClientInfo,
    HistoryResult,
    PresenceStats,
    Publication,
    PublishResult,
    StreamPosition,
    decode_binary_publication,
    decode_text,
    encode_binary_publish,
    encode_command,
    position_of,
    presence_of,
    presence_stats_of,
    publication_of,
    publications_of,
)

logger = logging.getLogger("fanout_sdk")

GetToken = Callable[[], Awaitable[str]]
"""An async callback that returns a fresh token (a connection or a subscription token)."""

_UNSET: Final[Any] = object()
"""``data`` not given (``None`` is the JSON value null)."""
_TERMINAL_HTTP: Final = frozenset({400, 401, 403, 404})
"""Handshake refusals that the same request would get again: no reconnect."""
_RETRY_SUBSCRIBE: Final = frozenset({429, 503})
"""Subscribe errors worth trying again later (limits, backend down)."""
QUEUE_OVERFLOW: Final = "client_queue_overflow"
"""The :class:`Gap` reason when a subscription's queue overflowed."""
NOT_RECOVERED: Final = "not_recovered"
"""The :class:`Gap` reason when the server could not recover missed publications."""


class State(Enum):
    """Where the connection is."""

    DISCONNECTED = "disconnected"
    """Not connected; a reconnect is planned (or :meth:`Client.connect` not called yet)."""
    CONNECTING = "connecting"
    """Opening the socket, authenticating and subscribing again."""
    CONNECTED = "connected"
    """Ready: every subscription has been sent."""
    CLOSED = "closed"
    """For good: closed by the program or by the server (no reconnect)."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of :class:`State`, given to the ``on_state`` callback."""

    state: State
    code: int | None = None
    """The close code (or HTTP status of a refused handshake) that caused it, if any."""
    reason: str = ""
    reconnect_in: float | None = None
    """Seconds until the next attempt (DISCONNECTED only); None: no reconnect planned."""


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The server confirmed a subscription (first time or after a reconnect)."""

    channel: str
    position: StreamPosition | None
    """The channel's history position, on channels with history."""
    recovered: bool | None
    """With ``since``: whether every missed publication came back; else None."""
    resubscribed: bool


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The subscription ended (the program unsubscribed: code 0)."""

    channel: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Join:
    """A connection joined the channel (channels with join/leave events)."""

    channel: str
    who: ClientInfo


@dataclass(frozen=True, slots=True)
class Leave:
    """A connection left the channel."""

    channel: str
    who: ClientInfo


@dataclass(frozen=True, slots=True)
class Gap:
    """Publications were lost: the server could not recover them (``reason`` from the
    server, or ``"not_recovered"``), or this client's queue overflowed (``dropped`` of them,
    ``reason`` ``"client_queue_overflow"``)."""

    channel: str
    reason: str
    dropped: int = 0


SubscriptionEvent = Subscribed | Unsubscribed | Join | Leave | Gap


class _SubState(Enum):
    PENDING = "pending"
    SUBSCRIBED = "subscribed"
    ENDED = "ended"


class Subscription:
    """One channel: iterate over it for its publications (``async for pub in sub``).

    Made by :meth:`Client.subscribe`; lives across reconnects until
    :meth:`unsubscribe`, :meth:`Client.close`, or the server ends it. Iteration then
    stops: quietly when the program ended it, with :class:`~fanout_sdk.errors.ClientClosed`
    or :class:`~fanout_sdk.errors.SubscriptionEnded` when the server did (after the
    publications already queued).
    """

    def __init__(
        self,
        client: Client,
        channel: str,
        *,
        token: str | None,
        get_token: GetToken | None,
        since: StreamPosition | None,
        recover: bool,
        queue_size: int,
        on_event: Callable[[SubscriptionEvent], None] | None,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.channel = channel
        self.position: StreamPosition | None = since
        """The last offset delivered (or the channel's position when subscribed) and the
        epoch, on channels with history; what ``since`` is on the next subscribe."""
        self.recover = recover
        self.dropped = 0
        """Publications dropped because the program read too slowly (the queue was full)."""
        self.duplicates = 0
        """Publications dropped because their offset was already delivered."""
        self._client = client
        self._token = token
        self._get_token = get_token
        self._queue: deque[Publication] = deque()
        self._early: list[Publication] = []
        self._queue_size = queue_size
        self._on_event = on_event
        self._state = _SubState.PENDING
        self._inflight = False
        self._subscribed_once = False
        self._overflowing = False
        self._wakeup: asyncio.Future[None] | None = None
        self._end: BaseException | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def subscribed(self) -> bool:
        """True while the server holds this subscription."""
        return self._state is _SubState.SUBSCRIBED

    @property
    def pending(self) -> bool:
        """True while (re)subscribing: the server does not hold it yet."""
        return self._state is _SubState.PENDING and not self._inflight

    @property
    def ended(self) -> bool:
        """True once the subscription is over for good."""
        return self._state is _SubState.ENDED

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Publication:
        while not self._queue:
            if self._state is _SubState.ENDED:
                if self._end is not None:
                    raise self._end
                raise StopAsyncIteration
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        publication = self._queue.popleft()
        if not self._queue:
            self._overflowing = False
        return publication

    async def get(self, within: float | None = None) -> Publication:
        """The next publication (like one step of ``async for``), waiting at most
        ``within`` seconds (:class:`TimeoutError` after that)."""
        async with asyncio.timeout(within):
            return await self.__anext__()

    async def unsubscribe(self) -> None:
        """Leave the channel; iteration stops after what is already queued."""
        await self._client._unsubscribe(self)

    async def publish(
        self, data: Any = _UNSET, *, text: str | None = None, binary: bytes | None = None
    ) -> PublishResult:
        """:meth:`Client.publish` on this channel."""
        return await self._client.publish(self.channel, data, text=text, binary=binary)

    async def history(
        self, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryResult:
        """:meth:`Client.history` of this channel."""
        return await self._client.history(self.channel, since=since, limit=limit)

    async def presence(self) -> dict[str, ClientInfo]:
        """:meth:`Client.presence` of this channel."""
        return await self._client.presence(self.channel)

    async def presence_stats(self) -> PresenceStats:
        """:meth:`Client.presence_stats` of this channel."""
        return await self._client.presence_stats(self.channel)

    # -- driven by the client ------------------------------------------------------------

    async def _sub_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"ch": self.channel}
        token = await self._get_token() if self._get_token is not None else self._token
        if token is not None:
            fields["token"] = token
        if self.recover and self.position is not None:
            fields["since"] = self.position.to_json()
        return fields

    def _on_subscribed(self, res: dict[str, Any], since: StreamPosition | None) -> None:
        position = position_of(res)
        recovered: bool | None = None
        if since is not None and position is not None:
            recovered = bool(res.get("recovered", False))
            if not recovered or position.epoch != since.epoch:
                self._emit(Gap(self.channel, NOT_RECOVERED))
                self.position = None  # older offsets belong to another epoch or are gone
            for publication in publications_of(self.channel, res):
                self._deliver(publication)
        early, self._early = self._early, []
        for publication in early:
            self._deliver(publication)
        if position is not None:
            current = self.position
            if current is None or current.epoch != position.epoch:
                self.position = position
            elif position.offset > current.offset:
                self.position = StreamPosition(position.offset, current.epoch)
        self._state = _SubState.SUBSCRIBED
        resubscribed = self._subscribed_once
        self._subscribed_once = True
        if not self._ready.done():
            self._ready.set_result(None)
        self._emit(Subscribed(self.channel, position, recovered, resubscribed))

    def _deliver(self, publication: Publication) -> None:
        """Queue one publication, unless its offset was already delivered."""
        if self._state is _SubState.ENDED:
            return
        offset = publication.offset
        if offset is not None and self.position is not None:
            if offset <= self.position.offset:
                self.duplicates += 1
                return
            self.position = StreamPosition(offset, self.position.epoch)
        if len(self._queue) >= self._queue_size:
            self._queue.popleft()
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                logger.warning(
                    "subscription %s: the program reads too slowly; dropping the oldest "
                    "publications (queue_size %d)",
                    self.channel,
                    self._queue_size,
                )
                self._emit(Gap(self.channel, QUEUE_OVERFLOW, dropped=1))
        self._queue.append(publication)
        self._wake()

    def _hold(self, publication: Publication) -> None:
        """Keep a publication that came before the sub reply (bounded like the queue)."""
        if len(self._early) < self._queue_size:
            self._early.append(publication)
        else:
            self.dropped += 1

    def _finish(self, end: BaseException | None, event: Unsubscribed | None) -> None:
        """End for good: iteration stops after the queue (raising ``end`` if given)."""
        if self._state is _SubState.ENDED:
            return
        self._state = _SubState.ENDED
        self._end = end
        if not self._ready.done():
            if end is not None:
                self._ready.set_exception(end)
                self._ready.exception()  # retrieved: nobody may be waiting any more
            else:
                self._ready.set_result(None)
        if event is not None:
            self._emit(event)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _emit(self, event: SubscriptionEvent) -> None:
        if self._on_event is not None:
            _call_back(self._on_event, event)


class Client:
    """A ``fanout.v1`` connection that stays up: see the module's documentation.

    ``async with Client(url, token=...) as client:`` connects and closes; or call
    :meth:`connect` and :meth:`close` yourself.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: GetToken | None = None,
        on_state: Callable[[StateChange], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        min_delay: float = 0.5,
        max_delay: float = 20.0,
        ping_interval: float = 25.0,
        ping_timeout: float = 10.0,
        command_timeout: float = 10.0,
        open_timeout: float = 10.0,
        refresh_margin: float = 10.0,
        queue_size: int = 1024,
        max_message_bytes: int | None = 16 * 1024 * 1024,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``url``: the server's ``ws://host/ws`` (or ``wss://``).

        ``token`` / ``get_token``: the connection token, or an async callback returning
        one (asked at the first connect, before expiry, and after a 4001 close); neither:
        an anonymous connection. ``on_state``: called with each :class:`StateChange`;
        ``on_error``: called with errors the server sent without a command id. Callbacks
        run on the event loop and must not block; what they raise is logged.

        ``min_delay``/``max_delay``: the reconnect backoff's first ceiling and cap
        (seconds). ``ping_interval``/``ping_timeout``: an application ping after that
        much silence, and how long its answer may take. ``command_timeout``: how long a
        command waits for its reply (and for a connection, when sent while
        disconnected). ``refresh_margin``: refresh a token this many seconds before it
        expires (at most a third of its lifetime). ``queue_size``: the default bound of
        each subscription's queue. ``max_message_bytes``: the largest frame accepted
        from the server (a history reply can be large).
        """
        self.url = url
        self.client_id: str | None = None
        """The server's id for this connection (changes with each reconnect)."""
        self.user: str | None = None
        """The user the server knows this connection as (``""``: anonymous)."""
        self._token = token
        self._get_token = get_token
        self._token_stale = token is None and get_token is not None
        self._token_deadline: float | None = None
        self._on_state = on_state
        self._on_error = on_error
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._command_timeout = command_timeout
        self._open_timeout = open_timeout
        self._refresh_margin = refresh_margin
        self._queue_size = queue_size
        self._max_size = max_message_bytes
        self._headers = headers or {}
        self._state = State.DISCONNECTED
        self._ws: ClientConnection | None = None
        self._subs: dict[str, Subscription] = {}
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._settled: asyncio.Event | None = None  # set while CONNECTED or CLOSED
        self._closed_by: ClientClosed | None = None
        self._last_received = 0.0
        self._attempt = 0

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The connection's current :class:`State`."""
        return self._state

    async def connect(self) -> None:
        """Start connecting (and reconnecting) in the background, and wait until connected.

        Raises :class:`ClientClosed` if the server refuses for good (4500-4999, a bad
        token, a handshake refused with 400/401/403/404). Wrap it in ``asyncio.timeout``
        to bound the wait; the client keeps trying until :meth:`close`.
        """
        if self._state is State.CLOSED:
            raise self._closed_by or ClientClosed()
        if self._runner is None:
            self._settled = asyncio.Event()
            self._runner = asyncio.create_task(self._run(), name=f"fanout {self.url}")
        await self._wait_settled(None)

    async def close(self) -> None:
        """Close the connection and stop reconnecting; every subscription's iteration
        stops, every command waiting fails with :class:`ClientClosed`, every task the
        client started is cancelled and awaited."""
        if self._state is State.CLOSED and self._runner is None:
            return
        self._closed_by = self._closed_by or ClientClosed(None, "closed by the program")
        ws = self._ws
        if ws is not None:
            try:
                async with asyncio.timeout(2.0):
                    await ws.close(1000, "bye")
            except (TimeoutError, OSError, ConnectionClosed):
                pass
        runner, self._runner = self._runner, None
        tasks = [t for t in (runner, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._shut(None, "closed by the program", quiet_subs=True)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- commands -----------------------------------------------------------------------------

    async def subscribe(
        self,
        channel: str,
        *,
        token: str | None = None,
        get_token: GetToken | None = None,
        since: StreamPosition | None = None,
        recover: bool = True,
        queue_size: int | None = None,
        on_event: Callable[[SubscriptionEvent], None] | None = None,
    ) -> Subscription:
        """Subscribe to ``channel`` and wait until the server confirms it.

        ``token``/``get_token``: a subscription token (channels whose rule is
        ``subscribe = "token"``). ``since``: recover from this position on the first
        subscribe (history channels). ``recover``: resubscribe with ``since`` after a
        reconnect (default). ``on_event``: called with each :data:`SubscriptionEvent`.

        Raises :class:`CommandError` when the server refuses (403, 401, 429, ...), and
        :class:`ValueError` if this client already holds ``channel``. Sent while
        disconnected, it waits for the connection.
        """
        if self._state is State.CLOSED:
            raise self._closed_by or ClientClosed()
        if channel in self._subs:
            raise ValueError(f"already subscribed to {channel}")
        sub = Subscription(
            self,
            channel,
            token=token,
            get_token=get_token,
            since=since,
            recover=recover,
            queue_size=queue_size or self._queue_size,
            on_event=on_event,
        )
        self._subs[channel] = sub
        if self._state is State.CONNECTED and self._ws is not None:
            self._spawn(self._subscribe(self._ws, sub))
        try:
            await asyncio.shield(sub._ready)
        except asyncio.CancelledError:
            self._spawn(self._unsubscribe(sub))
            raise
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.channel) is sub:
            del self._subs[sub.channel]
        was_subscribed = sub.subscribed
        sub._finish(None, Unsubscribed(sub.channel, 0, "unsubscribed by the program"))
        ws = self._ws
        if was_subscribed and ws is not None and self._state is State.CONNECTED:
            # Not held any more, or the connection is gone: either way, left.
            with contextlib.suppress(CommandError, DisconnectedError, CommandTimeout):
                await self._call_on(ws, "unsub", {"ch": sub.channel})

    async def publish(
        self,
        channel: str,
        data: Any = _UNSET,
        *,
        text: str | None = None,
        binary: bytes | None = None,
    ) -> PublishResult:
        """Publish JSON ``data`` (any JSON value, None included), ``text`` or ``binary``
        on ``channel`` and wait for the server's acknowledgement.

        Raises :class:`CommandError` (403 not allowed, 413 too large, ...),
        :class:`DisconnectedError` if the connection dropped before the ack (the
        publication may or may not have been sent: it is not retried),
        :class:`CommandTimeout`, or :class:`ClientClosed`.
        """
        given = (data is not _UNSET) + (text is not None) + (binary is not None)
        if given != 1:
            raise ValueError("give exactly one of data, text and binary")
        if binary is not None:
            res = await self._call_binary(channel, binary)
        elif text is not None:
            res = await self._call("pub", {"ch": channel, "text": text})
        else:
            res = await self._call("pub", {"ch": channel, "data": data})
        position = position_of(res)
        if position is None:
            return PublishResult()
        return PublishResult(position.offset, position.epoch)

    async def history(
        self, channel: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryResult:
        """The channel's position and publications after ``since`` (up to ``limit``).
        A server without history answers 404 (:class:`CommandError`)."""
        fields: dict[str, Any] = {"ch": channel}
        if since is not None:
            fields["since"] = since.to_json()
        if limit is not None:
            fields["limit"] = limit
        res = await self._call("history", fields)
        position = position_of(res) or StreamPosition(0, "")
        return HistoryResult(position.offset, position.epoch, publications_of(channel, res))

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        """Who is on the channel, by client id."""
        return presence_of(await self._call("presence", {"ch": channel}))

    async def presence_stats(self, channel: str) -> PresenceStats:
        """How many connections and users are on the channel."""
        return presence_stats_of(await self._call("presence_stats", {"ch": channel}))

    async def ping(self) -> float:
        """Round trip of a ``ping`` command, in seconds."""
        start = time.monotonic()
        await self._call("ping", {})
        return time.monotonic() - start

    # -- the connection loop --------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                self._set_state(StateChange(State.CONNECTING))
                code, reason, retry_after = await self._session()
                terminal = self._terminal(code, reason)
                if terminal is not None:
                    self._shut(code, terminal)
                    return
                delay = self._delay(code, reason, retry_after)
                self._set_state(StateChange(State.DISCONNECTED, code, reason, delay))
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: end the client rather than spin
            logger.exception("fanout client stopped by an unexpected error")
            self._shut(None, f"internal error: {exc!r}")

    def _terminal(self, code: int | None, reason: str) -> str | None:
        """Why not to reconnect after ``code``, or None to reconnect."""
        if code is None:
            return None
        if 4500 <= code <= 4999:
            return reason or "refused for good"
        if code in _TERMINAL_HTTP:
            return reason or f"handshake refused with HTTP {code}"
        if code == 4001 and self._get_token is None:
            return reason or "token expired and no get_token to renew it"
        return None

    def _delay(self, code: int | None, reason: str, retry_after: float | None) -> float:
        ceiling = min(self._max_delay, self._min_delay * 2**self._attempt)
        self._attempt += 1
        delay = random.uniform(0, ceiling)  # full jitter
        hint = retry_after
        if code == 1012 and reason.startswith("{"):
            try:
                ms = json.loads(reason).get("reconnect_after_ms")
            except (ValueError, AttributeError):
                ms = None
            if isinstance(ms, int | float) and ms >= 0:
                hint = ms / 1000
        if hint is not None:
            # At least the server's hint; a little jitter on top spreads the herd.
            delay = hint + random.uniform(0, min(self._min_delay, ceiling))
        return delay

    async def _session(self) -> tuple[int | None, str, float | None]:
        """One connection, from opening to its end: (close code or HTTP status, reason,
        Retry-After seconds)."""
        try:
            ws = await connect(
                self.url,
                subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
                additional_headers=self._headers,
                open_timeout=self._open_timeout,
                ping_interval=None,  # the application ping below (as browsers must)
                close_timeout=2.0,
                max_size=self._max_size,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            retry = exc.response.headers.get("Retry-After")
            body = exc.response.body.decode(errors="replace")[:200] if exc.response.body else ""
            retry_after = float(retry) if retry and retry.isdigit() else None
            return status, body or f"HTTP {status}", retry_after
        except InvalidURI as exc:
            return 400, str(exc), None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return None, f"cannot connect: {exc}", None
        self._ws = ws
        self._last_received = time.monotonic()
        session: set[asyncio.Task[Any]] = set()
        reader = self._spawn(self._read(ws), session)
        try:
            await self._open(ws, session)
            await asyncio.wait([reader])
        except (DisconnectedError, CommandTimeout, ConnectionClosed):
            pass
        except CommandError as exc:  # connect refused without a close: give up for good
            self._ws = None
            await ws.close(4500, exc.message[:100])
            return 4500, exc.message, None
        except TokenUnavailable as exc:
            await ws.close(1000, "no token")
            return None, str(exc), None
        finally:
            for task in session:
                task.cancel()
            await asyncio.gather(*session, return_exceptions=True)
            self._ws = None
            for sub in self._subs.values():
                if sub._state is _SubState.SUBSCRIBED:
                    sub._state = _SubState.PENDING
        if ws.state is not SocketState.CLOSED:
            await ws.close()
        await ws.wait_closed()
        code = ws.close_code
        reason = ws.close_reason or ""
        self._fail_pending(DisconnectedError(code, reason))
        if code == 4001:
            self._token_stale = True
        return code, reason, None

    async def _open(self, ws: ClientConnection, session: set[asyncio.Task[Any]]) -> None:
        """Authenticate, subscribe everything again, then serve until the socket ends."""
        fields: dict[str, Any] = {}
        token = await self._connection_token()
        if token is not None:
            fields["token"] = token
        res = await self._call_on(ws, "connect", fields)
        self.client_id = str(res.get("client", ""))
        self.user = str(res.get("user", ""))
        self._attempt = 0
        ttl = res.get("ttl")
        if isinstance(ttl, int | float):
            self._token_deadline = time.monotonic() + ttl
            if self._get_token is not None:
                self._spawn(self._refresh(ws, float(ttl)), session)
        # Subscribe every channel (those added meanwhile too) before saying CONNECTED.
        tried: set[Subscription] = set()
        while todo := [s for s in self._subs.values() if s.pending and s not in tried]:
            tried.update(todo)
            await asyncio.gather(*(self._subscribe(ws, s) for s in todo))
            if ws.state is not SocketState.OPEN:
                raise DisconnectedError(ws.close_code, ws.close_reason or "")
        self._set_state(StateChange(State.CONNECTED))
        self._spawn(self._keepalive(ws), session)

    async def _connection_token(self) -> str | None:
        stale = self._token_stale or (
            self._token_deadline is not None and time.monotonic() >= self._token_deadline
        )
        if self._get_token is not None and (stale or self._token is None):
            try:
                self._token = await self._get_token()
            except Exception as exc:
                raise TokenUnavailable(f"get_token failed: {exc!r}") from exc
            self._token_stale = False
            self._token_deadline = None
        return self._token

    async def _subscribe(self, ws: ClientConnection, sub: Subscription) -> None:
        if sub._inflight or sub._state is not _SubState.PENDING:
            return
        sub._inflight = True
        try:
            fields = await sub._sub_fields()
            since = StreamPosition(**_since_args(fields)) if "since" in fields else None
            try:
                res = await self._call_on(ws, "sub", fields)
            except CommandError as exc:
                if exc.code == 409:  # held already (a token's `channels` claim)
                    res = {}
                elif exc.code in _RETRY_SUBSCRIBE and sub._subscribed_once:
                    self._spawn(self._subscribe_later(ws, sub))
                    return
                else:
                    self._drop(sub, exc)
                    return
            if sub._state is _SubState.PENDING:
                sub._on_subscribed(res, since)
        except (DisconnectedError, CommandTimeout, ConnectionClosed):
            pass  # subscribed again on the next connection
        except Exception as exc:  # get_token failed, or an unreadable reply: try later
            logger.warning("subscribe %s failed: %r", sub.channel, exc)
            self._report(exc)
            self._spawn(self._subscribe_later(ws, sub))
        finally:
            sub._inflight = False

    async def _subscribe_later(self, ws: ClientConnection, sub: Subscription) -> None:
        await asyncio.sleep(random.uniform(self._min_delay, 2 * self._min_delay + 1))
        if self._ws is ws and sub.pending:
            await self._subscribe(ws, sub)

    def _drop(self, sub: Subscription, exc: CommandError) -> None:
        if self._subs.get(sub.channel) is sub:
            del self._subs[sub.channel]
        if sub._subscribed_once:
            end: BaseException = SubscriptionEnded(sub.channel, exc.code, exc.message)
        else:
            end = exc
        sub._finish(end, Unsubscribed(sub.channel, exc.code, exc.message))

    async def _refresh(self, ws: ClientConnection, ttl: float) -> None:
        """Ask for a new token before this one expires; send it with ``refresh``."""
        assert self._get_token is not None
        failures = 0
        while True:
            margin = min(self._refresh_margin, ttl / 3)
            await asyncio.sleep(max(0.0, ttl - margin) if failures == 0 else ttl)
            try:
                token = await self._get_token()
                res = await self._call_on(ws, "refresh", {"token": token})
            except (DisconnectedError, ConnectionClosed):
                return
            except Exception as exc:  # try again soon; at expiry the server closes: 4001
                failures += 1
                ttl = min(self._max_delay, self._min_delay * 2**failures)
                logger.warning("token refresh failed: %r", exc)
                self._report(exc)
                continue
            failures = 0
            self._token = token
            new_ttl = res.get("ttl")
            if not isinstance(new_ttl, int | float):
                self._token_deadline = None
                return  # a token without expiry
            ttl = float(new_ttl)
            self._token_deadline = time.monotonic() + ttl

    async def _keepalive(self, ws: ClientConnection) -> None:
        """Ping when nothing arrived for ``ping_interval``; no answer: drop the socket."""
        while True:
            idle = time.monotonic() - self._last_received
            if idle < self._ping_interval:
                await asyncio.sleep(self._ping_interval - idle)
                continue
            try:
                await self._call_on(ws, "ping", {}, self._ping_timeout)
            except CommandTimeout:
                logger.info("no answer to ping in %.1fs: reconnecting", self._ping_timeout)
                ws.transport.abort()  # a dead peer will not answer a close either
                return
            except (DisconnectedError, ConnectionClosed):
                return

    async def _read(self, ws: ClientConnection) -> None:
        """Every frame of one connection: replies to their commands, pushes to their
        subscriptions. Ends when the socket closes."""
        try:
            async for frame in ws:
                self._last_received = time.monotonic()
                try:
                    if isinstance(frame, bytes):
                        self._on_publication(decode_binary_publication(frame))
                    else:
                        self._on_text(decode_text(frame))
                except (ValueError, KeyError, TypeError) as exc:
                    logger.warning("unreadable frame from the server: %r", exc)
                    await ws.close(4501, "unreadable frame")
                    return
        except ConnectionClosed:
            pass
        finally:
            # Whatever waits for a reply on this socket will not get one.
            self._fail_pending(DisconnectedError(ws.close_code, ws.close_reason or ""))

    def _on_text(self, body: dict[str, Any]) -> None:
        command_id = body.get("id")
        if command_id is not None:
            future = self._pending.get(command_id)
            if future is None or future.done():
                return
            error = body.get("error")
            if isinstance(error, dict):
                future.set_exception(_command_error(error))
            else:
                res = body.get("res")
                future.set_result(res if isinstance(res, dict) else {})
            return
        channel = body.get("ch")
        event = body.get("ev")
        if isinstance(channel, str):
            sub = self._subs.get(channel)
            if sub is None:
                return
            if event is None:
                self._on_publication(publication_of(channel, body))
            elif event in ("join", "leave"):
                who = body.get("who") or {}
                info = ClientInfo(
                    str(who.get("client", "")), str(who.get("user", "")), who.get("info")
                )
                sub._emit(Join(channel, info) if event == "join" else Leave(channel, info))
            elif event == "gap":
                sub._emit(Gap(channel, str(body.get("reason", ""))))
            elif event == "unsub":
                code = int(body.get("code", 0))
                reason = str(body.get("reason", ""))
                self._drop(sub, CommandError(code, reason))
        elif event == "error" and isinstance(body.get("error"), dict):
            self._report(_command_error(body["error"]))

    def _on_publication(self, publication: Publication) -> None:
        sub = self._subs.get(publication.channel)
        if sub is None:
            return
        if sub._state is _SubState.SUBSCRIBED:
            sub._deliver(publication)
        elif sub._inflight:  # arrived before the sub reply: after the recovered ones
            sub._hold(publication)

    # -- plumbing -----------------------------------------------------------------------------

    async def _call(self, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        ws = await self._connected()
        return await self._call_on(ws, op, fields)

    async def _call_binary(self, channel: str, payload: bytes) -> dict[str, Any]:
        ws = await self._connected()
        command_id = self._next_id()
        frame = encode_binary_publish(command_id, channel, payload)
        return await self._exchange(ws, command_id, frame, self._command_timeout)

    async def _call_on(
        self,
        ws: ClientConnection,
        op: str,
        fields: dict[str, Any],
        within: float | None = None,
    ) -> dict[str, Any]:
        command_id = self._next_id()
        frame = encode_command(command_id, op, fields)
        return await self._exchange(ws, command_id, frame, within or self._command_timeout)

    async def _exchange(
        self, ws: ClientConnection, command_id: int, frame: str | bytes, within: float
    ) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        try:
            await ws.send(frame)
            async with asyncio.timeout(within):
                return await future
        except ConnectionClosed as exc:
            raise DisconnectedError(exc.code, exc.reason) from None
        except TimeoutError:
            raise CommandTimeout(f"no reply in {within}s") from None
        finally:
            self._pending.pop(command_id, None)

    async def _connected(self) -> ClientConnection:
        """The open socket, waiting up to the command timeout for one."""
        await self._wait_settled(self._command_timeout)
        ws = self._ws
        if ws is None:  # closed in between
            raise self._closed_by or ClientClosed()
        return ws

    async def _wait_settled(self, within: float | None) -> None:
        if self._is_closed():
            raise self._closed_by or ClientClosed()
        if self._settled is None:
            raise ClientClosed(None, "not connected: call connect() first")
        try:
            async with asyncio.timeout(within):
                await self._settled.wait()
        except TimeoutError:
            raise CommandTimeout(f"not connected within {within}s") from None
        if self._is_closed():
            raise self._closed_by or ClientClosed()

    def _is_closed(self) -> bool:
        return self._state is State.CLOSED

    def _next_id(self) -> int:
        command_id = next(self._ids)
        if command_id > MAX_ID:
            self._ids = itertools.count(2)
            command_id = 1
        return command_id

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    def _set_state(self, change: StateChange) -> None:
        self._state = change.state
        if self._settled is not None:
            if change.state in (State.CONNECTED, State.CLOSED):
                self._settled.set()
            else:
                self._settled.clear()
        if self._on_state is not None:
            _call_back(self._on_state, change)

    def _shut(self, code: int | None, reason: str, quiet_subs: bool = False) -> None:
        """CLOSED for good: fail what waits, end every subscription."""
        if self._state is State.CLOSED:
            return
        closed = self._closed_by or ClientClosed(code, reason)
        self._closed_by = closed
        self._fail_pending(closed)
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            sub._finish(
                None if quiet_subs else closed, Unsubscribed(sub.channel, code or 0, reason)
            )
        self._set_state(StateChange(State.CLOSED, code, reason))
        if self._settled is not None:
            self._settled.set()

    def _spawn(
        self, coro: Coroutine[Any, Any, Any], group: set[asyncio.Task[Any]] | None = None
    ) -> asyncio.Task[Any]:
        """A task owned by the client (and by ``group``): cancelled by :meth:`close`."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if group is not None:
            group.add(task)
            task.add_done_callback(group.discard)
        task.add_done_callback(_log_failure)
        return task

    def _report(self, exc: Exception) -> None:
        if self._on_error is not None:
            _call_back(self._on_error, exc)


class TokenUnavailable(Exception):
    """``get_token`` raised: this attempt fails, the next one asks again."""


def _since_args(fields: dict[str, Any]) -> dict[str, Any]:
    since = fields["since"]
    return {"offset": since["o"], "epoch": since["e"]}


def _command_error(error: dict[str, Any]) -> CommandError:
    return CommandError(int(error.get("code", 0)), str(error.get("message", "")))


def _call_back(callback: Callable[[Any], None], value: Any) -> None:
    try:
        callback(value)
    except Exception:
        logger.exception("a fanout_sdk callback raised")


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("fanout_sdk task failed", exc_info=task.exception())
