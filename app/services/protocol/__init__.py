"""The fanout.v1 codec: frames to typed commands, and replies, events and pushes to bytes.

Sans-I/O, after websockets' ``protocol.py``: no sockets, no asyncio, no state. The
``WS /ws`` route reads a frame, calls ``decode_command`` (text) or
``decode_binary_publish`` (binary), asks a service to act, and sends what the
``encode_*`` functions return. The wire contract is PROTOCOL.md section 2; the choices it
leaves open are documented in ``commands`` and ``encode`` (and belong in docs/protocol.md).

- ``errors``: ``ProtocolError`` (answered, socket stays open), ``FrameUnreadable``
  (close 4501), ``ErrorCode``.
- ``commands``: one msgspec Struct per op, decoded in one pass as a tagged union on
  ``"op"``; channel names; the client's binary publish frame.
- ``encode``: payload bytes for replies, errors, events and publications. Publications
  depend only on the message, so they are built once per worker and shared by every
  subscriber; the publisher's JSON goes out as the bytes it came in.
"""

from app.services.protocol.commands import (
    BAD_CHANNEL_MESSAGE,
    BINARY_PUBLISH,
    CHANNEL_RE,
    MAX_CHANNEL_LENGTH,
    MAX_COMMAND_ID,
    OPS,
    AnyCommand,
    BinaryPub,
    ChannelCommand,
    Command,
    Connect,
    History,
    Ping,
    Presence,
    PresenceStats,
    Pub,
    Refresh,
    Since,
    Sub,
    Unsub,
    decode_binary_publish,
    decode_command,
    valid_channel,
)
from app.services.protocol.encode import (
    BINARY_PUBLICATION,
    FLAG_OFFSET,
    BinaryPublication,
    decode_binary_publication,
    encode_binary_publication,
    encode_error,
    encode_gap,
    encode_join,
    encode_json_publication,
    encode_leave,
    encode_reply,
    encode_text_publication,
    encode_unsub,
    publication_of_pub,
    raw_payload_of_pub,
)
from app.services.protocol.errors import (
    CLOSE_PROTOCOL_ERROR,
    ErrorCode,
    FrameUnreadable,
    ProtocolError,
)

__all__ = [
    "BAD_CHANNEL_MESSAGE",
    "BINARY_PUBLICATION",
    "BINARY_PUBLISH",
    "CHANNEL_RE",
    "CLOSE_PROTOCOL_ERROR",
    "FLAG_OFFSET",
    "MAX_CHANNEL_LENGTH",
    "MAX_COMMAND_ID",
    "OPS",
    "AnyCommand",
    "BinaryPub",
    "BinaryPublication",
    "ChannelCommand",
    "Command",
    "Connect",
    "ErrorCode",
    "FrameUnreadable",
    "History",
    "Ping",
    "Presence",
    "PresenceStats",
    "ProtocolError",
    "Pub",
    "Refresh",
    "Since",
    "Sub",
    "Unsub",
    "decode_binary_publication",
    "decode_binary_publish",
    "decode_command",
    "encode_binary_publication",
    "encode_error",
    "encode_gap",
    "encode_join",
    "encode_json_publication",
    "encode_leave",
    "encode_reply",
    "encode_text_publication",
    "encode_unsub",
    "publication_of_pub",
    "raw_payload_of_pub",
    "valid_channel",
]
