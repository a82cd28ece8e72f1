"""Length-prefixed frames between the workers of one host (the local:// backend's wire format).

A frame is::

    length  uint32, big-endian: bytes that follow (kind + channel length + channel + payload)
    kind    uint8:  DATA_TEXT, DATA_BINARY, DATA_JSON, DATA_STAMPED, DATA_EVENT, HELLO or GAP
    chlen   uint16, big-endian: length of the channel name
    channel UTF-8
    payload the message bytes (the UTF-8 text of a text message)

A message is framed once per publish and the same bytes are written to every sibling.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from app.services.message import Message, from_stamp_payload, stamp_payload

HEADER = struct.Struct("!IBH")
"""length, kind, channel length."""

DATA_TEXT = 1
DATA_BINARY = 2
HELLO = 3
"""First frame on a link: the sender's pid as ASCII digits in the payload."""
GAP = 4
"""The sender dropped frames meant for the receiver (its link overflowed and was reopened)."""
DATA_JSON = 5
"""A fanout.v1 publication of JSON data: raw sockets get its bytes as text."""

DATA_STAMPED = 6
"""A publication of a history channel: kind, offset and epoch ahead of the data
(:func:`app.services.message.stamp_payload`)."""

DATA_EVENT = 7
"""A fanout.v1 event (join, leave) for the channel's fanout.v1 subscribers only."""

DATA_KINDS = frozenset((DATA_TEXT, DATA_BINARY, DATA_JSON, DATA_STAMPED, DATA_EVENT))
_KINDS = DATA_KINDS | {HELLO, GAP}
_AFTER_LENGTH = HEADER.size - 4  # kind + channel length count towards ``length``


class FrameError(ValueError):
    """The byte stream is not a sequence of Fanout frames; the link must be dropped."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: a message on a channel, or a control frame (HELLO, GAP)."""

    kind: int
    channel: str
    payload: bytes

    def message(self) -> Message:
        """The message a DATA frame carries, text or binary as it was sent."""
        if self.kind == DATA_TEXT:
            return Message.from_utf8(self.payload)
        if self.kind == DATA_JSON:
            return Message.from_json(self.payload)
        if self.kind == DATA_EVENT:
            return Message.event(self.payload)
        if self.kind == DATA_STAMPED:
            try:
                return from_stamp_payload(self.payload)
            except (ValueError, struct.error) as exc:
                raise FrameError(f"bad stamped payload: {exc}") from None
        return Message.from_bytes(self.payload)


def encode(channel: str, message: Message) -> bytes:
    """The frame for ``message`` on ``channel``."""
    if message.offset is not None:
        return encode_control(DATA_STAMPED, channel, stamp_payload(message))
    if message.text is None:
        kind = DATA_BINARY
    elif message.is_json:
        kind = DATA_JSON
    elif message.is_event:
        kind = DATA_EVENT
    else:
        kind = DATA_TEXT
    return encode_control(kind, channel, message.data)


def encode_control(kind: int, channel: str = "", payload: bytes = b"") -> bytes:
    """A frame of any kind."""
    name = channel.encode()
    return HEADER.pack(_AFTER_LENGTH + len(name) + len(payload), kind, len(name)) + name + payload


class FrameDecoder:
    """Turns a byte stream into frames; feed it what arrives, take frames as they complete."""

    __slots__ = ("_buffer", "_max_frame", "_pos")

    def __init__(self, max_frame_bytes: int) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._max_frame = max_frame_bytes

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer) - self._pos

    def feed(self, data: bytes) -> None:
        """Append bytes from the stream."""
        if self._pos:
            # Drop what was consumed before growing, so the buffer stays one frame or so long.
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive; FrameError on garbage."""
        buf = self._buffer
        pos = self._pos
        if len(buf) - pos < HEADER.size:
            return None
        length, kind, chlen = HEADER.unpack_from(buf, pos)
        if kind not in _KINDS or length > self._max_frame or chlen > length - _AFTER_LENGTH:
            raise FrameError(f"bad frame header: length={length} kind={kind} chlen={chlen}")
        end = pos + 4 + length
        if len(buf) < end:
            return None
        start = pos + HEADER.size
        channel = buf[start : start + chlen].decode()
        payload = bytes(buf[start + chlen : end])
        self._pos = end
        return Frame(kind, channel, payload)

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.next()) is not None:
            yield frame
