"""A message as it travels through Fanout: encoded once, shared by every receiver."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """One WebSocket message, text or binary.

    ``data`` is the UTF-8 encoding of a text message (or the bytes of a binary one),
    computed once when the message enters the worker and shared by every outbox it
    is offered to; ``text`` keeps the decoded string for transports that want one.
    """

    data: bytes
    text: str | None = None

    @property
    def is_text(self) -> bool:
        """True for a text frame, False for a binary one."""
        return self.text is not None

    @property
    def size(self) -> int:
        """Payload length in bytes, as it counts against size limits and outboxes."""
        return len(self.data)

    @classmethod
    def from_text(cls, text: str) -> Message:
        """A text message; encodes ``text`` to UTF-8 exactly once."""
        return cls(data=text.encode(), text=text)

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        """A binary message."""
        return cls(data=data)
