"""The two ways a fanout.v1 frame can fail, and the error codes of PROTOCOL.md section 2.

- ``FrameUnreadable``: the frame cannot be read at all (not JSON, not a JSON object, a
  binary frame whose header is cut short). There is nothing to answer to, so the caller
  closes the socket with ``CLOSE_PROTOCOL_ERROR`` (4501).
- ``ProtocolError``: the frame was read but the command is wrong (unknown op, missing or
  mistyped field, bad channel name), or a service refused it (403, 409, 429, ...). The
  socket stays open; the caller replies ``{"id":N,"error":{...}}`` when ``id`` is set and
  sends ``{"ev":"error","error":{...}}`` otherwise.
"""

from __future__ import annotations

from enum import IntEnum

CLOSE_PROTOCOL_ERROR = 4501
"""Close code for a frame that cannot be read (PROTOCOL.md section 6: do not reconnect)."""


class ErrorCode(IntEnum):
    """Error codes in replies and error events; each means what the HTTP status means.

    Names follow RFC 9110 (and ``http.HTTPStatus``) so the HTTP API can use the same enum.
    """

    BAD_REQUEST = 400
    """Malformed command: unknown op, missing or mistyped field, bad channel name."""
    UNAUTHORIZED = 401
    """No token, or an expired one."""
    FORBIDDEN = 403
    """The token or the channel rules do not allow this."""
    NOT_FOUND = 404
    """Unknown channel, subscription or resource."""
    CONFLICT = 409
    """Already subscribed."""
    CONTENT_TOO_LARGE = 413
    """The publication is over FANOUT_MAX_MESSAGE_BYTES."""
    TOO_MANY_REQUESTS = 429
    """Rate limit, or FANOUT_MAX_SUBSCRIPTIONS reached."""
    SERVICE_UNAVAILABLE = 503
    """The backend (Redis, a sibling worker) is down."""


class ProtocolError(Exception):
    """A command the server read but will not carry out; answered, the socket stays open.

    ``id`` is the command's id when it had a usable one (an integer from 1 to
    ``MAX_COMMAND_ID``), so the reply can carry it; None means the caller sends an
    ``{"ev":"error"}`` event instead. Services may raise it without an id and let the
    route fill in the command's.
    """

    __slots__ = ("code", "id", "message")

    def __init__(self, code: int, message: str, id: int | None = None) -> None:
        # ErrorCode(code) refuses codes outside the contract: a typo here would otherwise
        # reach clients as an undocumented code.
        self.code = ErrorCode(code)
        self.message = message
        self.id = id
        super().__init__(code, message, id)

    def __str__(self) -> str:
        where = f" (id {self.id})" if self.id is not None else ""
        return f"{int(self.code)} {self.message}{where}"

    def __repr__(self) -> str:
        return f"ProtocolError({int(self.code)}, {self.message!r}, id={self.id!r})"


class FrameUnreadable(Exception):
    """A frame that cannot be read at all; the caller closes the socket with 4501.

    ``reason`` is short ASCII, safe to put in a close frame (at most 123 bytes) and a
    log line; the decoder's own message, when there is one, is the ``__cause__``.
    """

    __slots__ = ("reason",)

    close_code = CLOSE_PROTOCOL_ERROR
    """The close code to send."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
