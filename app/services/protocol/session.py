"""ProtocolSession: fanout.v1 for one connection, apart from the socket.

The route hands it each frame the client sent; it decodes the command, checks the client's
rights (channel rules and token), acts through the
:class:`~app.services.broadcast.BroadcastService`, and offers the reply to the client's
outbox. It never awaits, so a command is handled inside the receive loop's turn, and
nothing a client sends can reach another client's session except a publication.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from enum import Enum
from typing import TYPE_CHECKING, Any

from app.services.auth import Refusal
from app.services.close_codes import CloseCode
from app.services.history.publisher import OrderedPublisher
from app.services.history.service import encode_entries
from app.services.history.store import HistoryUnavailable, Position, Retention
from app.services.history.subscription import HistorySubscription
from app.services.limits import RATE_LIMITED_REASON, PublishLimit
from app.services.message import Message
from app.services.protocol.commands import (
    AnyCommand,
    BinaryPub,
    Connect,
    History,
    Ping,
    Presence,
    PresenceStats,
    Pub,
    Refresh,
    Sub,
    Unsub,
    decode_binary_publish,
    decode_command,
)
from app.services.protocol.encode import encode_error, encode_reply, encode_reply_json
from app.services.protocol.errors import ErrorCode, FrameUnreadable, ProtocolError
from app.services.tokens import LEEWAY, Identity, TokenError

if TYPE_CHECKING:
    from app.services.auth import Authorizer
    from app.services.broadcast import BroadcastService
    from app.services.connection import Connection
    from app.services.history.service import HistoryService
    from app.services.presence import PresenceService

LOGGED_ERRORS = 3
"""Protocol errors logged per connection; the rest are only counted."""

_RATE_MESSAGE = "publish rate limit exceeded; slow down"


class RateLimitExceeded(Exception):
    """A client kept publishing over its rate: the session closes the socket with 4029."""


class SessionState(Enum):
    """Where a fanout.v1 session is; only moves forward."""

    NEW = "new"
    """Nothing handled yet: ``connect`` is still allowed."""
    READY = "ready"
    """Serving commands."""
    CLOSED = "closed"
    """Subscriptions released; every further frame is ignored."""


class _Close(Exception):
    """Raised by a command that ends the connection (a bad ``connect``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ProtocolSession:
    """One fanout.v1 client: who it is, its subscriptions, and what each command does.

    :meth:`on_text` and :meth:`on_binary` return a close code when the connection must end
    (a frame that cannot be read: 4501; a bad ``connect`` or none where authentication is
    required: 4500; an expired token at ``connect``: 4001), else None; a readable but wrong
    command gets an error reply and the socket stays open.
    """

    __slots__ = (
        "_auth",
        "_bucket",
        "_conn",
        "_expiry",
        "_history",
        "_kept",
        "_logged",
        "_max_bytes",
        "_max_subscriptions",
        "_presence",
        "_publish_limit",
        "_require_auth",
        "_service",
        "_tasks",
        "channels",
        "identity",
        "state",
    )

    def __init__(
        self,
        service: BroadcastService,
        conn: Connection,
        *,
        auth: Authorizer,
        presence: PresenceService,
        history: HistoryService,
        identity: Identity | None,
        require_auth: bool,
        max_subscriptions: int,
        max_message_bytes: int,
        publish_limit: PublishLimit | None = None,
    ) -> None:
        self._service = service
        self._conn = conn
        self._auth = auth
        self._presence = presence
        self._require_auth = require_auth
        self._history = history
        self._kept: OrderedPublisher | None = None
        """This socket's publications on history channels, in the order sent."""
        self._tasks: set[asyncio.Task[None]] = set()
        """Commands waiting for the history store; cancelled and awaited by aclose()."""
        self._max_subscriptions = max_subscriptions
        self._max_bytes = max_message_bytes
        self._publish_limit = publish_limit
        self._bucket = publish_limit.bucket() if publish_limit is not None else None
        self.channels: set[str] = set()
        """Channels this client is subscribed to."""
        self.identity: Identity | None = None
        """Who the client is (from its connection token), None for an anonymous client."""
        self.state = SessionState.NEW
        self._logged = 0
        self._expiry: asyncio.TimerHandle | None = None
        if identity is not None:
            self._identify(identity)

    @property
    def client(self) -> str:
        """This client's id, unique across the workers and hosts of the cluster."""
        return self._service.client_id(self._conn)

    def on_text(self, text: str, size: int) -> int | None:
        """Handle one text frame of ``size`` bytes."""
        try:
            command = decode_command(text)
            if size > self._max_bytes:
                raise ProtocolError(
                    ErrorCode.CONTENT_TOO_LARGE,
                    f"frame of {size} bytes exceeds {self._max_bytes}",
                    command.id,
                )
            self._handle(command)
        except ProtocolError as exc:
            self._error(exc)
        except FrameUnreadable as exc:
            return self._end(CloseCode.BAD_FRAME, exc.reason)
        except _Close as close:
            return self._end(close.code, close.reason)
        except RateLimitExceeded:
            return self._rate_limit_close()
        return None

    def on_binary(self, data: bytes) -> int | None:
        """Handle one binary frame: a client's binary publish."""
        try:
            publish = decode_binary_publish(data)
            self._begin(None)
            if len(publish.payload) > self._max_bytes:
                raise ProtocolError(
                    ErrorCode.CONTENT_TOO_LARGE,
                    f"payload of {len(publish.payload)} bytes exceeds {self._max_bytes}",
                    publish.id,
                )
            self._publish(publish.ch, Message.from_bytes(publish.payload), publish)
        except ProtocolError as exc:
            self._error(exc)
        except FrameUnreadable as exc:
            return self._end(CloseCode.BAD_FRAME, exc.reason)
        except _Close as close:
            return self._end(close.code, close.reason)
        except RateLimitExceeded:
            return self._rate_limit_close()
        return None

    async def aclose(self) -> None:
        """Release every subscription, the expiry timer and the commands still waiting for
        the history store; called once when the socket's session ends."""
        if self._kept is not None:
            await self._kept.aclose()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.close()

    def close(self) -> None:
        """Release every subscription and the expiry timer."""
        self.state = SessionState.CLOSED
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        client = self.client
        for channel in self.channels:
            self._service.unsubscribe(self._conn, channel)
            self._presence.left(channel, client)
        self.channels.clear()

    # -- commands ---------------------------------------------------------------------------

    def _begin(self, command: AnyCommand | None) -> bool:
        """Move past NEW; True if ``command`` is the session's first. Where authentication
        is required, a client that is nobody yet may only ``connect``."""
        first = self.state is SessionState.NEW
        if first:
            self.state = SessionState.READY
        if self._require_auth and self.identity is None and not isinstance(command, Connect):
            raise _Close(CloseCode.INVALID_TOKEN, "authentication required: connect with a token")
        return first

    def _handle(self, command: AnyCommand) -> None:
        if self.state is SessionState.CLOSED:
            return
        first = self._begin(command)
        if isinstance(command, Pub):  # first: the hot path
            message = (
                Message.from_text(command.text)
                if command.text is not None
                else Message.from_json(bytes(command.data))
            )
            self._publish(command.ch, message, command)
        elif isinstance(command, Sub):
            self._subscribe(command)
        elif isinstance(command, Unsub):
            self._unsubscribe(command)
        elif isinstance(command, Ping):
            self._reply(command.id)
        elif isinstance(command, Connect):
            self._connect(command, first)
        elif isinstance(command, Refresh):
            self._refresh(command)
        elif isinstance(command, Presence | PresenceStats):
            self._presence_query(command)
        elif isinstance(command, History):
            self._read_history(command)
        else:
            op = type(command).__struct_config__.tag
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{op} is not available here", command.id)

    def _connect(self, command: Connect, first: bool) -> None:
        if not first:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "connect must be the first command", command.id
            )
        if command.token is not None:
            try:
                identity = self._auth.tokens.connection(command.token)
            except TokenError as exc:
                code = CloseCode.TOKEN_EXPIRED if exc.expired else CloseCode.INVALID_TOKEN
                raise _Close(code, exc.reason) from None
            self._identify(identity)
        elif self._require_auth and self.identity is None:
            raise _Close(CloseCode.INVALID_TOKEN, "authentication required: connect with a token")
        res: dict[str, Any] = {"client": self.client, "user": self._user}
        ttl = self.identity.ttl() if self.identity is not None else None
        if ttl is not None:
            res["ttl"] = ttl
        self._reply(command.id, res)

    def _identify(self, identity: Identity) -> None:
        """Take ``identity`` (from ?token= or connect): arm its expiry and subscribe the
        channels its token lists (the token's issuer granted them)."""
        self.identity = identity
        self._arm_expiry(identity)
        for channel in identity.channels:
            if channel not in self.channels and len(self.channels) < self._max_subscriptions:
                self.channels.add(channel)
                self._service.subscribe(self._conn, channel)
                self._presence.joined(channel, self.client, identity)

    def _refresh(self, command: Refresh) -> None:
        try:
            identity = self._auth.tokens.connection(command.token)
        except TokenError as exc:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, exc.reason, command.id) from None
        if self.identity is not None and identity.user != self.identity.user:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "the new token is for another user", command.id
            )
        self.identity = identity
        self._arm_expiry(identity)
        ttl = identity.ttl()
        self._reply(command.id, {} if ttl is None else {"ttl": ttl})

    def _arm_expiry(self, identity: Identity) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if identity.exp is not None:
            delay = max(0.0, identity.exp + LEEWAY - time.time())  # exp is wall-clock
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        self._conn.close(CloseCode.TOKEN_EXPIRED, "token expired")

    def _subscribe(self, command: Sub) -> None:
        channel = command.ch
        if channel in self.channels:
            raise ProtocolError(ErrorCode.CONFLICT, f"already subscribed to {channel}", command.id)
        if len(self.channels) >= self._max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_REQUESTS,
                f"subscription limit of {self._max_subscriptions} reached",
                command.id,
            )
        self._check(self._auth.may_subscribe(self.identity, channel, command.token), command)
        retention = self._history.retention(channel)
        self.channels.add(channel)
        if retention is None:
            self._service.subscribe(self._conn, channel)
            self._reply(command.id)
            self._presence.joined(channel, self.client, self.identity)  # after the reply
            return
        # Subscribed now, so nothing published from here on is missed; held until the
        # reply (the position, and what the client missed) is read from the store.
        subscription = HistorySubscription(self._conn)
        self._service.subscribe(self._conn, channel, subscription)
        since = (command.since.o, command.since.e) if command.since is not None else None
        self._spawn(self._recover(command, subscription, since, retention))

    async def _recover(
        self,
        command: Sub,
        subscription: HistorySubscription,
        since: tuple[int, str] | None,
        retention: Retention,
    ) -> None:
        channel = command.ch
        try:
            recovery = await self._history.recover(channel, since, retention)
        except HistoryUnavailable:
            if channel in self.channels:
                self.channels.discard(channel)
                self._service.unsubscribe(self._conn, channel)
            self._error(
                ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, "history unavailable", command.id)
            )
            return
        position = recovery.position
        res: dict[str, Any] = {"o": position.offset, "e": position.epoch}
        if since is not None:
            res["recovered"] = recovery.recovered
            res["pubs"] = encode_entries(recovery.entries)
        self._reply(command.id, res)
        subscription.release(position.offset)
        if channel in self.channels:
            self._presence.joined(channel, self.client, self.identity)  # after the reply

    def _unsubscribe(self, command: Unsub) -> None:
        if command.ch not in self.channels:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"not subscribed to {command.ch}", command.id)
        self.channels.discard(command.ch)
        self._service.unsubscribe(self._conn, command.ch)
        self._presence.left(command.ch, self.client)
        self._reply(command.id)

    def _presence_query(self, command: Presence | PresenceStats) -> None:
        channel = command.ch
        if not self._presence.enabled(channel):
            raise ProtocolError(
                ErrorCode.NOT_FOUND, "presence is not enabled on this channel", command.id
            )
        subscribed = channel in self.channels
        self._check(
            self._auth.may_see_presence(self.identity, channel, subscribed=subscribed), command
        )
        if command.id is None:
            return  # nobody would read the answer
        if isinstance(command, Presence):
            answer = encode_reply_json(command.id, self._presence.presence(channel))
            self._conn.offer(Message.from_utf8(answer))
        else:
            clients, users = self._presence.stats(channel)
            self._reply(command.id, {"clients": clients, "users": users})

    def _publish(self, channel: str, message: Message, command: Pub | BinaryPub) -> None:
        bucket = self._bucket
        if bucket is not None and not bucket.take():
            self._rate_limited(bucket.exhausted, command.id)
            return
        subscribed = channel in self.channels
        self._check(self._auth.may_publish(self.identity, channel, subscribed=subscribed), command)
        self._service.stats.received()
        retention = self._history.retention(channel)
        if retention is None:
            self._service.publish(channel, message)
            self._reply(command.id)
        else:
            id = command.id

            def done(position: Position | None) -> None:
                if position is None:
                    unavailable = ErrorCode.SERVICE_UNAVAILABLE
                    self._error(ProtocolError(unavailable, "history unavailable", id))
                else:
                    self._reply(id, {"o": position.offset, "e": position.epoch})

            if self._kept is None:
                self._kept = OrderedPublisher(self._history)
            if not self._kept.offer(channel, message, retention, done):
                raise ProtocolError(
                    ErrorCode.TOO_MANY_REQUESTS, "too many publications waiting for history", id
                )

    def _read_history(self, command: History) -> None:
        channel = command.ch
        retention = self._history.retention(channel)
        if retention is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{channel} keeps no history", command.id)
        allowed = channel in self.channels or (
            self.identity is not None and self.identity.may("history", channel)
        )
        if not allowed:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"subscribe to {channel} to read its history", command.id
            )
        since = (command.since.o, command.since.e) if command.since is not None else None
        self._spawn(self._send_history(command, since, retention))

    async def _send_history(
        self, command: History, since: tuple[int, str] | None, retention: Retention
    ) -> None:
        try:
            position, entries = await self._history.read(
                command.ch, since, command.limit, retention
            )
        except HistoryUnavailable:
            self._error(
                ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, "history unavailable", command.id)
            )
            return
        self._reply(
            command.id,
            {"o": position.offset, "e": position.epoch, "pubs": encode_entries(entries)},
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def _user(self) -> str:
        return self.identity.user if self.identity is not None else ""

    @staticmethod
    def _check(refusal: Refusal | None, command: AnyCommand | BinaryPub) -> None:
        if refusal is not None:
            raise ProtocolError(refusal.code, refusal.message, command.id)

    # -- replies ----------------------------------------------------------------------------

    def _reply(self, id: int | None, res: dict[str, Any] | None = None) -> None:
        if id is not None:
            self._conn.offer(Message.from_utf8(encode_reply(id, res)))

    def _error(self, exc: ProtocolError) -> None:
        self._count_error(int(exc.code), exc.message)
        self._conn.offer(Message.from_utf8(encode_error(exc.code, exc.message, exc.id)))

    def _rate_limited(self, exhausted: bool, id: int | None) -> None:
        """A pub over FANOUT_CLIENT_PUBLISH_RATE: 429, counted, not logged (one line at the
        close, if it comes to that); the client that keeps at it is closed with 4029."""
        if exhausted:
            raise RateLimitExceeded
        self._service.stats.rate_limited(self._conn)
        code = ErrorCode.TOO_MANY_REQUESTS
        self._service.stats.protocol_error(self._conn, code, _RATE_MESSAGE, log=False)
        self._conn.offer(Message.from_utf8(encode_error(code, _RATE_MESSAGE, id)))

    def _rate_limit_close(self) -> int:
        assert self._publish_limit is not None
        self._service.stats.rate_limited(self._conn, self._publish_limit.describe())
        self._conn.close(CloseCode.RATE_LIMITED, RATE_LIMITED_REASON)
        return CloseCode.RATE_LIMITED

    def _end(self, code: int, reason: str) -> int:
        self._count_error(code, reason)
        self._conn.close(code, reason)
        return code

    def _count_error(self, code: int, message: str) -> None:
        # Every error is counted; a client that keeps sending bad commands gets its first
        # few logged, so it cannot flood the log.
        self._logged += 1
        self._service.stats.protocol_error(
            self._conn, code, message, log=self._logged <= LOGGED_ERRORS
        )
