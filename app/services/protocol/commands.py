"""fanout.v1 client commands: one frame in, one typed command (or a documented error) out.

Text frames are decoded by msgspec straight into the command's Struct, a tagged union on
``"op"``: one pass over the bytes, no intermediate dict. Only when that fails does a
second, lenient pass (``_Probe``) read ``id`` and ``op`` to tell the three failures apart:

- not JSON, or JSON that is not an object -> ``FrameUnreadable`` (close 4501);
- ``id`` present but not an integer from 1 to ``MAX_COMMAND_ID`` -> ``ProtocolError`` 400
  without an id (the client cannot match a reply to it, so it gets an error event);
- anything else (unknown op, missing or mistyped field) -> ``ProtocolError`` 400 carrying
  the id, so the caller can reply to it.

The error path pays for a second decode; the common path pays for nothing but the one.

Choices where PROTOCOL.md is silent (for docs/protocol.md):

- Unknown fields are ignored, as Centrifugo does, so that clients newer than the server
  keep working. They are skipped without being decoded (but must still be valid JSON).
- ``"id": null`` is the same as no id. ``0``, negatives, floats (``7.0`` too), strings and
  booleans are refused with 400 and no id. The upper bound is 2**32 - 1, the largest id
  the binary publish frame can carry (and Centrifugo's uint32).
- ``null`` for an optional field (``token``, ``since``, ``limit``, ``text``) means absent;
  for ``data`` it is the JSON value ``null``, published as such.
- A repeated key: the last one wins (msgspec); a repeated ``op`` is refused with 400.
- Lone UTF-16 surrogate escapes (``"\\ud800"``) cannot be represented in UTF-8 and make a
  frame unreadable, as does JSON nested deeper than the decoder's recursion limit
  (about 1,000 levels).
"""

from __future__ import annotations

import codecs
import re
import struct
from typing import Annotated, Any, Final, TypeAlias

import msgspec

from app.services.protocol.errors import ErrorCode, FrameUnreadable, ProtocolError

MAX_COMMAND_ID: Final = 2**32 - 1
"""Largest command id: the binary publish frame's u32, and Centrifugo's uint32."""

MAX_CHANNEL_LENGTH: Final = 128
"""Longest channel name on ``/ws``; the names are ASCII, so this is also its byte length."""

CHANNEL_RE: Final = re.compile(rf"[A-Za-z0-9_.\-@=#]{{1,{MAX_CHANNEL_LENGTH}}}")
"""A valid channel name, to use with ``fullmatch`` (``match`` would accept a prefix and
``$`` a trailing newline). ``:`` stays out: it is reserved for internal channels."""

_channel_ok = CHANNEL_RE.fullmatch
BAD_CHANNEL_MESSAGE: Final = (
    "invalid channel name: 1-128 characters of A-Z a-z 0-9 _ . - @ = # expected"
)


def valid_channel(name: str) -> bool:
    """True when ``name`` is a channel a client may use on ``/ws``."""
    return _channel_ok(name) is not None


CommandId: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=MAX_COMMAND_ID)]
Offset: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]


class Since(msgspec.Struct, frozen=True, gc=False):
    """A position in a channel's history: offset ``o`` in epoch ``e``."""

    o: Offset
    e: str


# kw_only lets subclasses declare required fields (``ch``) after the optional ``id``;
# gc=False because a command holds only scalars, never a cycle, so the collector can skip it.
class Command(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag_field="op"):
    """Base of every text command; ``id`` is set when the client wants a reply."""

    id: CommandId | None = None


class ChannelCommand(Command, frozen=True, gc=False, kw_only=True):
    """A command about one channel; ``ch`` is checked with ``valid_channel`` on decode."""

    ch: str


class Connect(Command, frozen=True, gc=False, kw_only=True, tag="connect"):
    """``connect``: optional first command, carrying the connection token."""

    token: str | None = None


class Sub(ChannelCommand, frozen=True, gc=False, kw_only=True, tag="sub"):
    """``sub``: subscribe to ``ch``, with a subscription token and a recovery position."""

    token: str | None = None
    since: Since | None = None


class Unsub(ChannelCommand, frozen=True, gc=False, kw_only=True, tag="unsub"):
    """``unsub``: leave ``ch``."""


class Pub(ChannelCommand, frozen=True, gc=False, kw_only=True, tag="pub"):
    """``pub``: publish ``data`` (any JSON) or ``text`` (a string) to ``ch``.

    ``data`` holds the publisher's JSON verbatim (whitespace and key order kept): it was
    parsed once to check that it is JSON and is never encoded again. Empty means absent
    (valid JSON is never empty); exactly one of ``data`` and ``text`` is set after
    ``decode_command``. ``data`` is a view of the received frame, which it keeps alive.
    """

    data: msgspec.Raw = msgspec.Raw()
    text: str | None = None

    @property
    def has_data(self) -> bool:
        """True for a JSON publication, False for a text one."""
        return len(self.data) > 0


class History(ChannelCommand, frozen=True, gc=False, kw_only=True, tag="history"):
    """``history``: publications of ``ch`` after ``since``, at most ``limit`` of them.

    ``limit`` None means the server's default; 0 asks for the position only (Centrifugo).
    """

    since: Since | None = None
    limit: Offset | None = None


class Presence(ChannelCommand, frozen=True, gc=False, kw_only=True, tag="presence"):
    """``presence``: who is subscribed to ``ch``."""


class PresenceStats(ChannelCommand, frozen=True, gc=False, kw_only=True, tag="presence_stats"):
    """``presence_stats``: how many clients and users are subscribed to ``ch``."""


class Refresh(Command, frozen=True, gc=False, kw_only=True, tag="refresh"):
    """``refresh``: a new connection token before the current one expires."""

    token: str


class Ping(Command, frozen=True, gc=False, kw_only=True, tag="ping"):
    """``ping``: answered with ``{}``, for clients that cannot see WebSocket pings."""


AnyCommand: TypeAlias = (
    Connect | Sub | Unsub | Pub | History | Presence | PresenceStats | Refresh | Ping
)
"""Every command ``decode_command`` can return."""

OPS: Final = frozenset(
    ("connect", "sub", "unsub", "pub", "history", "presence", "presence_stats", "refresh", "ping")
)
"""The ``op`` names of fanout.v1."""

_decoder: Final[msgspec.json.Decoder[AnyCommand]] = msgspec.json.Decoder(AnyCommand)
_decode: Final = _decoder.decode


class _Probe(msgspec.Struct, gc=False):
    # Reads only what an error report needs; ``Any`` accepts whatever the client sent,
    # so this pass fails only on frames that are not a JSON object.
    id: Any = None
    op: Any = None


_probe: Final = msgspec.json.Decoder(_Probe).decode

_ID_MESSAGE: Final = f"id must be an integer from 1 to {MAX_COMMAND_ID}"


def decode_command(frame: bytes | bytearray | memoryview | str) -> AnyCommand:
    """The command in one text frame.

    Raises ``FrameUnreadable`` when the frame is not a JSON object (or not valid UTF-8),
    and ``ProtocolError`` (400) when the object is not a valid command; its ``id`` is the
    command's id when the frame carried a usable one.
    """
    if type(frame) is not bytes and not isinstance(frame, str):
        # A Raw ``data`` points into the input: copy a mutable buffer first, which the
        # caller may reuse for the next frame.
        frame = bytes(frame)
    try:
        command = _decode(frame)
    except msgspec.ValidationError as exc:
        raise _explain(frame, exc) from exc
    except msgspec.DecodeError as exc:
        raise FrameUnreadable("frame is not JSON") from exc
    except RecursionError as exc:
        raise FrameUnreadable("JSON nested too deeply") from exc
    except UnicodeError as exc:
        # msgspec lets codec errors through for strings it decodes (bytes input) or
        # encodes (a str holding lone surrogates).
        raise FrameUnreadable("frame is not valid UTF-8") from exc
    # Checks msgspec cannot express, with ``pub`` first because it is the hot path.
    if type(command) is Pub:
        if (len(command.data) > 0) == (command.text is not None) or (
            type(frame) is bytes and not frame.isascii()
        ):
            _check_pub(command, frame)
    elif not isinstance(command, ChannelCommand):
        return command
    if _channel_ok(command.ch) is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, BAD_CHANNEL_MESSAGE, command.id)
    return command


def _check_pub(command: Pub, frame: bytes | str) -> None:
    """Raises for a pub with both or neither of data and text, or data not UTF-8."""
    has_data = len(command.data) > 0
    if has_data == (command.text is not None):
        got = "both" if has_data else "neither"
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"pub needs exactly one of data or text, got {got}", command.id
        )
    if has_data and type(frame) is bytes:
        # msgspec checks the syntax of a Raw value but not the UTF-8 of the strings in it,
        # and these bytes go out verbatim in text frames, where invalid UTF-8 makes every
        # receiver close with 1007. A str frame is Unicode already; an ASCII one is UTF-8
        # (the caller checked ``isascii`` before coming here).
        try:
            codecs.utf_8_decode(command.data, "strict", True)
        except UnicodeDecodeError as exc:
            raise FrameUnreadable("frame is not valid UTF-8") from exc


def _explain(frame: bytes | str, exc: msgspec.ValidationError) -> Exception:
    """The error for a frame the typed decoder refused, told apart by a lenient pass."""
    try:
        probe = _probe(frame)
    except msgspec.ValidationError as probe_exc:
        # The lenient struct accepts any object, so the top level is not one.
        return _unreadable("frame is not a JSON object", probe_exc)
    except msgspec.DecodeError as probe_exc:
        # The typed pass stopped at its first wrong field; this one read to the end.
        return _unreadable("frame is not JSON", probe_exc)
    except RecursionError as probe_exc:
        return _unreadable("JSON nested too deeply", probe_exc)
    except UnicodeError as probe_exc:
        return _unreadable("frame is not valid UTF-8", probe_exc)
    id = probe.id
    if id is not None and not (type(id) is int and 1 <= id <= MAX_COMMAND_ID):
        return ProtocolError(ErrorCode.BAD_REQUEST, _ID_MESSAGE)
    op = probe.op
    if op is None:
        return ProtocolError(ErrorCode.BAD_REQUEST, "missing field op", id)
    if type(op) is not str:
        return ProtocolError(ErrorCode.BAD_REQUEST, "op must be a string", id)
    if op not in OPS:
        # Echo at most a short prefix: the message goes to logs and back to the client.
        shown = op if len(op) <= 32 else op[:32] + "..."
        return ProtocolError(ErrorCode.BAD_REQUEST, f"unknown op {shown!r}", id)
    return ProtocolError(ErrorCode.BAD_REQUEST, f"invalid {op} command: {exc}", id)


def _unreadable(reason: str, cause: BaseException) -> FrameUnreadable:
    error = FrameUnreadable(reason)
    error.__cause__ = cause
    return error


# Binary publish (client -> server):
#   0x02 | id u32 BE (0 = no reply) | channel length u8 | channel (ASCII) | payload

BINARY_PUBLISH: Final = 0x02
"""First byte of a client's binary publish frame."""

_PUBLISH_HEADER: Final = struct.Struct("!BIB")
"""type, id, channel length."""


class BinaryPub(msgspec.Struct, frozen=True, gc=False):
    """A binary publish: ``payload`` for ``ch``; ``id`` None when the client wants no reply."""

    id: int | None
    ch: str
    payload: bytes


def decode_binary_publish(frame: bytes | bytearray | memoryview) -> BinaryPub:
    """The publication in one binary frame from a client.

    A frame whose structure is broken (shorter than its 6-byte header, a first byte other
    than 0x02, a channel running past the end) cannot be read at all, like non-JSON
    text: ``FrameUnreadable``. A well-formed frame with a bad channel name is a
    ``ProtocolError`` 400 carrying the id, like a text command. The payload may be empty.
    """
    if type(frame) is not bytes:
        # One copy up front, so the slices below are bytes (and need no second copy).
        frame = bytes(frame)
    size = len(frame)
    if size < _PUBLISH_HEADER.size:
        raise FrameUnreadable("binary frame shorter than its header")
    kind, id, length = _PUBLISH_HEADER.unpack_from(frame)
    if kind != BINARY_PUBLISH:
        raise FrameUnreadable("binary frame of unknown type")
    start = _PUBLISH_HEADER.size
    end = start + length
    if end > size:
        raise FrameUnreadable("binary frame shorter than its channel length")
    reply_id = id or None
    try:
        # ASCII: every valid name is, and anything else fails the check below anyway.
        ch = frame[start:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, BAD_CHANNEL_MESSAGE, reply_id) from None
    if _channel_ok(ch) is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, BAD_CHANNEL_MESSAGE, reply_id)
    # The payload is a copy: every consumer (Message, history, backends) needs bytes, and
    # a view would pin the whole received frame.
    return BinaryPub(reply_id, ch, frame[end:])
