"""A message as it travels through Fanout: encoded and framed once, shared by every receiver."""

from __future__ import annotations

import struct

from app.services.protocol.encode import (
    encode_binary_publication,
    encode_json_publication,
    encode_text_publication,
)

OP_TEXT = 0x1
OP_BINARY = 0x2


class Message:
    """One WebSocket message, text or binary, as raw sockets receive it.

    ``data`` is the UTF-8 encoding of a text message (or the bytes of a binary one),
    computed once when the message enters the worker and shared by every outbox it is
    offered to; ``text`` keeps the decoded string for the plain ASGI path. ``frame`` is
    the complete unmasked server frame, built once per worker and written as-is to
    every socket on the direct path (gorilla/websocket's PreparedMessage).

    ``is_json`` marks a fanout.v1 ``pub`` with ``data``: raw sockets get the JSON bytes as
    text, fanout.v1 subscribers ``{"ch":..,"d":..}``. ``is_event`` marks a fanout.v1 event
    (``join``, ``leave``): already the frame fanout.v1 subscribers receive, and nothing for
    raw sockets. :meth:`envelope` is what fanout.v1
    subscribers receive, built the first time one of them is offered the message, and
    then the same object (and frame) for every one of them.
    """

    __slots__ = (
        "_envelope",
        "data",
        "epoch",
        "frame",
        "is_event",
        "is_json",
        "offset",
        "size",
        "text",
    )

    def __init__(
        self,
        data: bytes,
        text: str | None = None,
        *,
        is_json: bool = False,
        is_event: bool = False,
        offset: int | None = None,
        epoch: str = "",
    ) -> None:
        self.data = data
        self.text = text
        self.is_json = is_json
        self.is_event = is_event
        self.offset = offset
        """The publication's offset on a history channel (None elsewhere)."""
        self.epoch = epoch
        """The channel's history epoch when ``offset`` is set."""
        self.size = len(data)
        """Payload length in bytes, as it counts against size limits and outboxes."""
        self.frame = build_frame(OP_TEXT if text is not None else OP_BINARY, data)
        """The wire bytes of this message as one final, unmasked, uncompressed frame."""
        self._envelope: Message | None = None

    @property
    def is_text(self) -> bool:
        """True for a text frame, False for a binary one."""
        return self.text is not None

    @classmethod
    def from_text(cls, text: str) -> Message:
        """A text message; encodes ``text`` to UTF-8 exactly once."""
        return cls(text.encode(), text)

    @classmethod
    def from_utf8(cls, data: bytes) -> Message:
        """A text message from its UTF-8 bytes (decoded once, for the ASGI path)."""
        return cls(data, data.decode())

    @classmethod
    def from_json(cls, data: bytes) -> Message:
        """A fanout.v1 publication of one JSON value, ``data`` being its exact bytes."""
        return cls(data, data.decode(), is_json=True)

    @classmethod
    def event(cls, data: bytes) -> Message:
        """A fanout.v1 event (``join``/``leave``), ``data`` being its UTF-8 JSON: delivered
        as is to fanout.v1 subscribers (it is its own envelope), never to raw sockets."""
        return cls(data, data.decode(), is_event=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        """A binary message."""
        return cls(data)

    def stamped(self, offset: int, epoch: str) -> Message:
        """This message as publication ``offset`` of a history channel's ``epoch``."""
        return Message(self.data, self.text, is_json=self.is_json, offset=offset, epoch=epoch)

    def envelope(self, channel: str) -> Message:
        """This message as fanout.v1 subscribers of ``channel`` receive it (built once).

        A message is published on one channel, so the first call's channel is the one.
        """
        envelope = self._envelope
        if envelope is None:
            if self.is_event:
                return self  # not cached on itself: that would be a reference cycle
            offset = self.offset
            if self.text is None:
                payload = encode_binary_publication(channel, self.data, offset)
                envelope = Message(payload, offset=offset, epoch=self.epoch)
            else:
                payload = (
                    encode_json_publication(channel, self.data, offset)
                    if self.is_json
                    else encode_text_publication(channel, self.text, offset)
                )
                envelope = Message(payload, payload.decode(), offset=offset, epoch=self.epoch)
            self._envelope = envelope
        return envelope

    def __repr__(self) -> str:
        kind = (
            "binary"
            if self.text is None
            else "json"
            if self.is_json
            else "event"
            if self.is_event
            else "text"
        )
        return f"Message({kind}, {len(self.data)} bytes)"


_STAMP = struct.Struct("!cQB")
"""A stamped payload's head: kind (t, b, j), offset, epoch length; the epoch follows."""


def stamp_payload(message: Message) -> bytes:
    """``message`` with its history offset and epoch, for a backend to carry between
    workers (its own kind marks such payloads; :func:`from_stamp_payload` reads them)."""
    kind = b"b" if message.text is None else b"j" if message.is_json else b"t"
    epoch = message.epoch.encode()
    return _STAMP.pack(kind, message.offset or 0, len(epoch)) + epoch + message.data


def from_stamp_payload(payload: bytes) -> Message:
    """The message :func:`stamp_payload` wrote; ValueError (or UnicodeDecodeError) if it
    is not one."""
    kind, offset, length = _STAMP.unpack_from(payload)
    start = _STAMP.size + length
    epoch = payload[_STAMP.size : start].decode()
    data = payload[start:]
    if kind == b"b":
        return Message(data, offset=offset, epoch=epoch)
    if kind not in (b"t", b"j"):
        raise ValueError(f"unknown stamped kind {kind!r}")
    return Message(data, data.decode(), is_json=kind == b"j", offset=offset, epoch=epoch)


def build_frame(opcode: int, payload: bytes) -> bytes:
    """A final server frame (RFC 6455 section 5.2): no mask, no RSV bits."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return head + payload
