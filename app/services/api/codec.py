"""HTTP API bodies: JSON in (msgspec, one typed pass), publications and results out.

``data`` is decoded as ``msgspec.Raw``: parsed once to check it is JSON, then published as
the exact bytes the caller sent (whitespace and key order kept), never encoded again; the
same style as the fanout.v1 codec in :mod:`app.services.protocol.commands`.

Choices where PROTOCOL.md is silent (for docs/protocol.md):

- Exactly one of ``data`` (any JSON, ``null`` included), ``text`` (a string) and ``b64data``
  (standard base64, published as a binary message) per request; none or two is 400.
- ``idempotency_key``: 1-256 characters, else 400. ``null`` is the same as absent.
- Unknown fields are ignored (Centrifugo's ``skip_history``, ``tags``, ... from its client
  libraries), as on ``/ws``.
- The size limit (FANOUT_MAX_MESSAGE_BYTES) applies to the message: the JSON bytes of
  ``data``, the UTF-8 of ``text``, the decoded bytes of ``b64data``, the body of
  ``/api/publish/{channel}``. A JSON body may be larger than the message by its own fields
  and base64's third (:func:`json_body_limit`); past that it is refused before it is read.
- ``/api/publish/{channel}``: a ``text/*`` body is text (it must be UTF-8, whatever the
  charset parameter says); ``application/json`` or ``*/*+json`` is a JSON publication
  (checked, and published as its JSON value without surrounding whitespace); any other
  content type, or none, is binary.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Final, TypeAlias, TypeVar

import msgspec

from app.services.api.errors import ApiError, ErrorCode
from app.services.message import Message
from app.services.protocol.commands import BAD_CHANNEL_MESSAGE, valid_channel

MAX_IDEMPOTENCY_KEY: Final = 256
"""Longest idempotency_key, in characters."""
BODY_SLACK: Final = 65_536
"""Bytes a JSON body may hold beyond its message: field names, channels, idempotency key."""

IdempotencyKey: TypeAlias = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)
]


def json_body_limit(max_message_bytes: int) -> int:
    """Largest JSON body read: a message at the limit, base64-encoded, plus the slack."""
    return 4 * ((max_message_bytes + 2) // 3) + BODY_SLACK


class Kind(Enum):
    """What subscribers receive: JSON data, text, or binary."""

    JSON = "json"
    TEXT = "text"
    BINARY = "binary"


class Payload:
    """One publication's content, checked once; :meth:`message` makes one Message per
    channel (a Message caches its fanout.v1 envelope for the one channel it goes to)."""

    __slots__ = ("data", "kind", "text")

    def __init__(self, kind: Kind, data: bytes, text: str | None = None) -> None:
        self.kind = kind
        self.data = data
        self.text = text

    @property
    def size(self) -> int:
        """Bytes counted against FANOUT_MAX_MESSAGE_BYTES."""
        return len(self.data)

    def message(self) -> Message:
        """A new Message with this content."""
        if self.kind is Kind.JSON:
            return Message.from_json(self.data)
        if self.kind is Kind.TEXT:
            assert self.text is not None
            return Message.from_text(self.text)
        return Message.from_bytes(self.data)


class _Content(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    data: msgspec.Raw = msgspec.Raw()
    text: str | None = None
    b64data: bytes | None = None
    idempotency_key: IdempotencyKey | None = None


class PublishRequest(_Content, frozen=True, gc=False, kw_only=True):
    """``POST /api/publish``."""

    channel: str


class BroadcastRequest(_Content, frozen=True, gc=False, kw_only=True):
    """``POST /api/broadcast``."""

    channels: list[str]


class ChannelRequest(msgspec.Struct, frozen=True, gc=False):
    """``POST /api/presence``, ``/api/presence_stats``: ``{"channel": C}``."""

    channel: str


class Publish(msgspec.Struct, frozen=True, gc=False):
    """A checked publish: ``payload`` to ``channel``, once per ``idempotency_key``."""

    channel: str
    payload: Payload
    idempotency_key: str | None


class Broadcast(msgspec.Struct, frozen=True, gc=False):
    """A checked broadcast; bad names among ``channels`` are answered one by one."""

    channels: list[str]
    payload: Payload
    idempotency_key: str | None


R = TypeVar("R", PublishRequest, BroadcastRequest, ChannelRequest)

_decode_publish: Final = msgspec.json.Decoder(PublishRequest).decode
_decode_broadcast: Final = msgspec.json.Decoder(BroadcastRequest).decode
_decode_raw: Final = msgspec.json.Decoder(msgspec.Raw).decode
_decode_channel: Final = msgspec.json.Decoder(ChannelRequest).decode


def decode_publish(body: bytes, max_message_bytes: int) -> Publish:
    """The publish in a ``POST /api/publish`` body; ApiError 400 or 413 if there is none."""
    request = _decode(_decode_publish, body, "publish")
    if not valid_channel(request.channel):
        raise ApiError(ErrorCode.BAD_REQUEST, BAD_CHANNEL_MESSAGE)
    payload = _payload(request, body, max_message_bytes)
    return Publish(request.channel, payload, request.idempotency_key)


def decode_broadcast(body: bytes, max_message_bytes: int) -> Broadcast:
    """The broadcast in a ``POST /api/broadcast`` body; ApiError 400 or 413 if there is none."""
    request = _decode(_decode_broadcast, body, "broadcast")
    if not request.channels:
        raise ApiError(ErrorCode.BAD_REQUEST, "channels must not be empty")
    payload = _payload(request, body, max_message_bytes)
    return Broadcast(request.channels, payload, request.idempotency_key)


def decode_channel(body: bytes, what: str) -> str:
    """The valid channel of a ``{"channel": C}`` body; ApiError 400 if there is none."""
    request = _decode(_decode_channel, body, what)
    if not valid_channel(request.channel):
        raise ApiError(ErrorCode.BAD_REQUEST, BAD_CHANNEL_MESSAGE)
    return request.channel


def decode_body_message(content_type: str | None, body: bytes) -> Payload:
    """The message of ``POST /api/publish/{channel}``, by content type (module docs).

    The caller has checked the size (the body is the message).
    """
    media = (content_type or "").partition(";")[0].strip().lower()
    if media.startswith("text/"):
        return Payload(Kind.TEXT, body, _utf8(body))
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        try:
            value = bytes(_decode_raw(body))
        except (msgspec.DecodeError, RecursionError) as exc:
            raise ApiError(ErrorCode.BAD_REQUEST, "body is not JSON") from exc
        _utf8(value)
        return Payload(Kind.JSON, value)
    return Payload(Kind.BINARY, body)


def _decode(decode: Callable[[bytes], R], body: bytes, what: str) -> R:
    try:
        return decode(body)
    except msgspec.ValidationError as exc:  # before DecodeError, its base class
        raise ApiError(ErrorCode.BAD_REQUEST, f"invalid {what} request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, "body is not JSON") from exc
    except RecursionError as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, "JSON nested too deeply") from exc
    except UnicodeError as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, "body is not valid UTF-8") from exc


def _payload(request: _Content, body: bytes, limit: int) -> Payload:
    """The one content of ``request``, checked: exactly one kind, UTF-8, within ``limit``."""
    has_data = len(request.data) > 0
    given = has_data + (request.text is not None) + (request.b64data is not None)
    if given != 1:
        got = "none" if given == 0 else "more than one"
        raise ApiError(
            ErrorCode.BAD_REQUEST, f"exactly one of data, text or b64data expected, got {got}"
        )
    if has_data:
        data = bytes(request.data)
        if not body.isascii():
            # msgspec checks a Raw value's syntax, not the UTF-8 of the strings in it, and
            # these bytes go out verbatim in text frames (invalid UTF-8: receivers close 1007).
            _utf8(data)
        payload = Payload(Kind.JSON, data)
    elif request.text is not None:
        try:
            encoded = request.text.encode()
        except UnicodeError as exc:  # a lone surrogate escape, "\\ud800"
            raise ApiError(ErrorCode.BAD_REQUEST, "text is not valid Unicode") from exc
        payload = Payload(Kind.TEXT, encoded, request.text)
    else:
        assert request.b64data is not None
        payload = Payload(Kind.BINARY, request.b64data)
    if payload.size > limit:
        raise ApiError(ErrorCode.CONTENT_TOO_LARGE, f"message larger than {limit} bytes")
    return payload


def _utf8(data: bytes) -> str:
    try:
        return codecs.utf_8_decode(data, "strict", True)[0]
    except UnicodeDecodeError as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, "body is not valid UTF-8") from exc
