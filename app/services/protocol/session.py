"""ProtocolSession: fanout.v1 for one connection, apart from the socket.

The route hands it each frame the client sent; it decodes the command, acts through the
:class:`~app.services.broadcast.BroadcastService`, and offers the reply to the client's
outbox. It never awaits, so a command is handled inside the receive loop's turn, and
nothing a client sends can reach another client's session except a publication.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from app.services.close_codes import CloseCode
from app.services.limits import RATE_LIMITED_REASON, PublishLimit
from app.services.message import Message
from app.services.protocol.commands import (
    AnyCommand,
    BinaryPub,
    Connect,
    Ping,
    Pub,
    Sub,
    Unsub,
    decode_binary_publish,
    decode_command,
)
from app.services.protocol.encode import encode_error, encode_reply
from app.services.protocol.errors import ErrorCode, FrameUnreadable, ProtocolError

if TYPE_CHECKING:
    from app.services.broadcast import BroadcastService
    from app.services.connection import Connection


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


class ProtocolSession:
    """One fanout.v1 client: its subscriptions, and what each command does.

    :meth:`on_text` and :meth:`on_binary` return a close code when the frame could not be
    read at all (the route then closes with it), else None; a readable but wrong command
    gets an error reply and the socket stays open.
    """

    __slots__ = (
        "_bucket",
        "_conn",
        "_logged",
        "_max_bytes",
        "_max_subscriptions",
        "_publish_limit",
        "_service",
        "channels",
        "state",
    )

    def __init__(
        self,
        service: BroadcastService,
        conn: Connection,
        *,
        max_subscriptions: int,
        max_message_bytes: int,
        publish_limit: PublishLimit | None = None,
    ) -> None:
        self._service = service
        self._conn = conn
        self._max_subscriptions = max_subscriptions
        self._max_bytes = max_message_bytes
        self._publish_limit = publish_limit
        self._bucket = publish_limit.bucket() if publish_limit is not None else None
        self.channels: set[str] = set()
        """Channels this client is subscribed to."""
        self.state = SessionState.NEW
        self._logged = 0

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
            return self._unreadable(exc)
        except RateLimitExceeded:
            return self._rate_limit_close()
        return None

    def on_binary(self, data: bytes) -> int | None:
        """Handle one binary frame: a client's binary publish."""
        try:
            publish = decode_binary_publish(data)
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
            return self._unreadable(exc)
        except RateLimitExceeded:
            return self._rate_limit_close()
        return None

    def close(self) -> None:
        """Release every subscription; called once when the socket's session ends."""
        self.state = SessionState.CLOSED
        for channel in self.channels:
            self._service.unsubscribe(self._conn, channel)
        self.channels.clear()

    # -- commands ---------------------------------------------------------------------------

    def _handle(self, command: AnyCommand) -> None:
        if self.state is SessionState.CLOSED:
            return
        first = self.state is SessionState.NEW
        self.state = SessionState.READY
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
            if not first:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST, "connect must be the first command", command.id
                )
            self._reply(command.id, {"client": self.client, "user": ""})
        else:
            # history, presence, presence_stats, refresh: no channel has history or
            # presence and no connection has a token until the rules and tokens exist.
            op = type(command).__struct_config__.tag
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{op} is not available here", command.id)

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
        if "#" in channel:
            # name#<user>: only a connection whose token says it is <user>; an anonymous
            # connection is nobody's.
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"{channel} is another user's channel", command.id
            )
        self.channels.add(channel)
        self._service.subscribe(self._conn, channel)
        self._reply(command.id)

    def _unsubscribe(self, command: Unsub) -> None:
        if command.ch not in self.channels:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"not subscribed to {command.ch}", command.id)
        self.channels.discard(command.ch)
        self._service.unsubscribe(self._conn, command.ch)
        self._reply(command.id)

    def _publish(self, channel: str, message: Message, command: Pub | BinaryPub) -> None:
        bucket = self._bucket
        if bucket is not None and not bucket.take():
            self._rate_limited(bucket.exhausted, command.id)
            return
        # The built-in channel rule is publish = "subscribers": a client publishes where it
        # listens (the HTTP API may always publish).
        if channel not in self.channels:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"subscribe to {channel} before publishing", command.id
            )
        self._service.stats.received()
        self._service.publish(channel, message)
        self._reply(command.id)

    # -- replies ----------------------------------------------------------------------------

    def _reply(self, id: int | None, res: dict[str, str] | None = None) -> None:
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

    def _unreadable(self, exc: FrameUnreadable) -> int:
        self._count_error(CloseCode.BAD_FRAME, exc.reason)
        self._conn.close(CloseCode.BAD_FRAME, exc.reason)
        return CloseCode.BAD_FRAME

    def _count_error(self, code: int, message: str) -> None:
        # Every error is counted; a client that keeps sending bad commands gets its first
        # few logged, so it cannot flood the log.
        self._logged += 1
        self._service.stats.protocol_error(
            self._conn, code, message, log=self._logged <= LOGGED_ERRORS
        )
