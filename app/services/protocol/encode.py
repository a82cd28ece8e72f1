"""fanout.v1 server frames as payload bytes: replies, errors, events and publications.

Every function returns the payload of one WebSocket message (text unless it says binary);
the caller wraps it into a frame. Publications are built once per worker and the same
bytes go to every subscriber, so nothing here depends on the receiving connection.

Strings go through msgspec, which escapes quotes, backslashes and control characters
(U+2028 and other non-ASCII characters stay raw UTF-8, which JSON allows). The
publisher's ``data`` is spliced in as the bytes it arrived as, never decoded or encoded
again: the ``%b`` below copies bytes, it does not look at them.

Between kinds of sockets (PROTOCOL.md section 2):

====================  ==============================  ===================================
published as          fanout.v1 subscribers get       raw /ws/broadcast subscribers get
====================  ==============================  ===================================
``pub`` with data D   ``encode_json_publication``     text frame, the exact bytes of D
``pub`` with text S   ``encode_text_publication``     text frame S
raw text T            ``encode_text_publication``     text frame T (unchanged)
binary (raw, 0x02)    ``encode_binary_publication``   binary frame, the payload
====================  ==============================  ===================================

``publication_of_pub`` and ``raw_payload_of_pub`` pick the row for a ``Pub``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from app.services.protocol.commands import Pub
from app.services.protocol.errors import FrameUnreadable

_Buffer = bytes | bytearray | memoryview
"""What a frame to read may be given as."""

_encode: Final = msgspec.json.Encoder().encode


def encode_reply(id: int, res: Mapping[str, Any] | msgspec.Struct | None = None) -> bytes:
    """``{"id":N,"res":{...}}``; ``res`` None is ``{}``.

    ``res`` may hold ``msgspec.Raw`` values (history ``"d"``, token ``info``): msgspec
    writes them out verbatim.
    """
    body = b"{}" if res is None else _encode(res)
    return b'{"id":%d,"res":%b}' % (id, body)


def encode_reply_json(id: int, res: bytes) -> bytes:
    """``{"id":N,"res":<res>}`` with ``res`` already JSON (a presence answer): spliced in."""
    return b'{"id":%d,"res":%b}' % (id, res)


def encode_error(code: int, message: str, id: int | None = None) -> bytes:
    """``{"id":N,"error":{...}}`` with an id, ``{"ev":"error","error":{...}}`` without."""
    error = b'{"code":%d,"message":%b}' % (code, _encode(message))
    if id is None:
        return b'{"ev":"error","error":%b}' % error
    return b'{"id":%d,"error":%b}' % (id, error)


def encode_join(ch: str, client: str, user: str, info: Any = None) -> bytes:
    """``{"ch":C,"ev":"join","who":{"client":..,"user":..,"info":..}}``.

    ``info`` is the token's public JSON (``null`` when it had none; a ``msgspec.Raw``
    is written verbatim). It is always present so clients need not test for it.
    """
    return _presence_event(ch, b"join", client, user, info)


def encode_leave(ch: str, client: str, user: str, info: Any = None) -> bytes:
    """``{"ch":C,"ev":"leave","who":{...}}``, the same ``who`` as the join."""
    return _presence_event(ch, b"leave", client, user, info)


def _presence_event(ch: str, ev: bytes, client: str, user: str, info: Any) -> bytes:
    who = _encode({"client": client, "user": user, "info": info})
    return b'{"ch":%b,"ev":"%b","who":%b}' % (_encode(ch), ev, who)


def encode_gap(ch: str, reason: str) -> bytes:
    """``{"ch":C,"ev":"gap","reason":R}``: publications were lost and not recovered."""
    return b'{"ch":%b,"ev":"gap","reason":%b}' % (_encode(ch), _encode(reason))


def encode_unsub(ch: str, code: int, reason: str) -> bytes:
    """``{"ch":C,"ev":"unsub","code":N,"reason":R}``: the server ended a subscription."""
    return b'{"ch":%b,"ev":"unsub","code":%d,"reason":%b}' % (_encode(ch), code, _encode(reason))


# Publications put "o" before the payload, as history's "pubs" entries do, so a reader
# can find the offset without scanning past a large "d".


def encode_json_publication(ch: str, data: bytes, offset: int | None = None) -> bytes:
    """``{"ch":C,"d":D}`` (``{"ch":C,"o":N,"d":D}`` with an offset).

    ``data`` must be one JSON value (a ``Pub.data``, or bytes from the history store):
    it is copied in as is, so the subscriber sees exactly what the publisher sent.
    ``msgspec.Raw`` (a ``Pub.data``) and other buffers are accepted as ``bytes`` are.
    """
    if offset is None:
        return b'{"ch":%b,"d":%b}' % (_encode(ch), data)
    return b'{"ch":%b,"o":%d,"d":%b}' % (_encode(ch), offset, data)


def encode_text_publication(ch: str, text: str, offset: int | None = None) -> bytes:
    """``{"ch":C,"s":"text"}`` (``{"ch":C,"o":N,"s":...}`` with an offset)."""
    if offset is None:
        return b'{"ch":%b,"s":%b}' % (_encode(ch), _encode(text))
    return b'{"ch":%b,"o":%d,"s":%b}' % (_encode(ch), offset, _encode(text))


# Binary publication (server -> client):
#   0x01 | flags u8 (bit0: offset follows) | [offset u64 BE] | channel length u8 | channel
#   | payload

BINARY_PUBLICATION: Final = 0x01
"""First byte of a binary publication frame."""
FLAG_OFFSET: Final = 0x01
"""Flags bit: a u64 offset follows the flags."""

_PLAIN_HEAD: Final = struct.Struct("!BBB")
"""type, flags, channel length."""
_OFFSET_HEAD: Final = struct.Struct("!BBQB")
"""type, flags, offset, channel length."""
_MAX_OFFSET: Final = 2**64 - 1


def encode_binary_publication(ch: str, payload: bytes, offset: int | None = None) -> bytes:
    """The binary frame for ``payload`` on ``ch``, with the channel's offset when given.

    Raises ValueError for a channel longer than 255 bytes or an offset outside u64;
    neither happens with names ``valid_channel`` accepts and offsets the history issues.
    """
    name = ch.encode()
    if len(name) > 255:
        raise ValueError(f"channel name of {len(name)} bytes does not fit a binary frame")
    if offset is None:
        head = _PLAIN_HEAD.pack(BINARY_PUBLICATION, 0, len(name))
    elif 0 <= offset <= _MAX_OFFSET:
        head = _OFFSET_HEAD.pack(BINARY_PUBLICATION, FLAG_OFFSET, offset, len(name))
    else:
        raise ValueError(f"offset {offset} does not fit a u64")
    return b"%b%b%b" % (head, name, payload)


def publication_of_pub(pub: Pub, offset: int | None = None) -> bytes:
    """What fanout.v1 subscribers receive for ``pub``: ``{"ch","d"}`` or ``{"ch","s"}``."""
    if pub.text is None:
        return encode_json_publication(pub.ch, pub.data, offset)
    return encode_text_publication(pub.ch, pub.text, offset)


def raw_payload_of_pub(pub: Pub) -> bytes:
    """What raw subscribers receive for ``pub``, as the UTF-8 payload of a text frame.

    The exact bytes of ``data`` (detached from the received frame), or ``text`` encoded.
    """
    if pub.text is None:
        return bytes(pub.data)
    return pub.text.encode()


class BinaryPublication(msgspec.Struct, frozen=True, gc=False):
    """A binary publication read back: ``payload`` on ``ch``, ``offset`` when it had one."""

    ch: str
    payload: bytes
    offset: int | None = None


def decode_binary_publication(frame: _Buffer) -> BinaryPublication:
    """Reads a binary publication frame, the inverse of ``encode_binary_publication``.

    For clients (the Python SDK, the benchmark, tests). Raises ``FrameUnreadable`` when
    the frame is not one, is cut short, or its channel is not UTF-8.
    """
    size = len(frame)
    if size < _PLAIN_HEAD.size or frame[0] != BINARY_PUBLICATION:
        raise FrameUnreadable("not a binary publication")
    flags = frame[1]
    if flags & FLAG_OFFSET:
        if size < _OFFSET_HEAD.size:
            raise FrameUnreadable("binary publication shorter than its header")
        _, _, offset, length = _OFFSET_HEAD.unpack_from(frame)
        start: int = _OFFSET_HEAD.size
    else:
        offset = None
        length = frame[2]
        start = _PLAIN_HEAD.size
    end = start + length
    if end > size:
        raise FrameUnreadable("binary publication shorter than its channel length")
    try:
        ch = bytes(frame[start:end]).decode()
    except UnicodeDecodeError as exc:
        raise FrameUnreadable("binary publication channel is not UTF-8") from exc
    return BinaryPublication(ch, bytes(frame[end:]), offset)
