"""A message as it travels through Fanout: encoded and framed once, shared by every receiver."""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2


class Message:
    """One WebSocket message, text or binary.

    ``data`` is the UTF-8 encoding of a text message (or the bytes of a binary one),
    computed once when the message enters the worker and shared by every outbox it is
    offered to; ``text`` keeps the decoded string for the plain ASGI path. ``frame`` is
    the complete unmasked server frame, built once per worker and written as-is to
    every socket on the direct path (gorilla/websocket's PreparedMessage).
    """

    __slots__ = ("data", "frame", "size", "text")

    def __init__(self, data: bytes, text: str | None = None) -> None:
        self.data = data
        self.text = text
        self.size = len(data)
        """Payload length in bytes, as it counts against size limits and outboxes."""
        self.frame = build_frame(OP_TEXT if text is not None else OP_BINARY, data)
        """The wire bytes of this message as one final, unmasked, uncompressed frame."""

    @property
    def is_text(self) -> bool:
        """True for a text frame, False for a binary one."""
        return self.text is not None

    @classmethod
    def from_text(cls, text: str) -> Message:
        """A text message; encodes ``text`` to UTF-8 exactly once."""
        return cls(text.encode(), text)

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        """A binary message."""
        return cls(data)

    def __repr__(self) -> str:
        kind = "text" if self.text is not None else "binary"
        return f"Message({kind}, {len(self.data)} bytes)"


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
