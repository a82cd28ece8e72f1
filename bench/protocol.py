"""Minimal client-side WebSocket wire protocol (RFC 6455) for the load generator.

Only what a cheap load generator needs: the opening handshake, a masked frame
encoder, and an incremental parser that counts server frames from their headers
(optionally keeping the first bytes of each payload, e.g. a timestamp).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Payload layout used by the generator: send time (monotonic ns), publisher id, sequence.
PAYLOAD_HEADER = struct.Struct(">QII")
PAYLOAD_MIN = PAYLOAD_HEADER.size


class HandshakeError(Exception):
    """The server did not accept the WebSocket upgrade."""


def make_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def accept_for(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def handshake_request(
    host: str, port: int, path: str, key: bytes, subprotocol: str | None = None
) -> bytes:
    offer = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"{offer}"
        "\r\n"
    ).encode()


def parse_handshake_response(
    buf: bytes, key: bytes, subprotocol: str | None = None
) -> tuple[bool, bytes]:
    """Check an upgrade response (and, when one was offered, the chosen subprotocol).

    Returns (complete, rest): complete is False while the header block is not
    fully received; rest holds bytes after the headers (early frames).
    Raises HandshakeError when the response is not a valid 101.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 16384:
            raise HandshakeError("response headers too large")
        return False, b""
    head = buf[:end].decode("latin-1")
    lines = head.split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise HandshakeError(f"unexpected status: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("missing Upgrade: websocket")
    if "upgrade" not in headers.get("connection", "").lower():
        raise HandshakeError("missing Connection: Upgrade")
    if headers.get("sec-websocket-accept", "").encode() != accept_for(key):
        raise HandshakeError("bad Sec-WebSocket-Accept")
    if subprotocol is not None and headers.get("sec-websocket-protocol") != subprotocol:
        raise HandshakeError(f"server did not choose subprotocol {subprotocol}")
    return True, buf[end + 4 :]


def _mask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return payload
    reps = (n + 3) // 4
    m = int.from_bytes(mask * reps, "big") >> (8 * (reps * 4 - n))
    return (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")


def encode_frame(
    payload: bytes, opcode: int = OP_BINARY, mask: bytes | None = None, fin: bool = True
) -> bytes:
    """Encode one client frame. Client frames are always masked (RFC 6455 5.3)."""
    if mask is None:
        mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        header = struct.pack(">BB", b0, 0x80 | n)
    elif n < 65536:
        header = struct.pack(">BBH", b0, 0x80 | 126, n)
    else:
        header = struct.pack(">BBQ", b0, 0x80 | 127, n)
    return header + mask + _mask(payload, mask)


def make_payload(size: int, pub_id: int, seq: int, t_ns: int) -> bytes:
    head = PAYLOAD_HEADER.pack(t_ns, pub_id, seq)
    return head + b"x" * max(0, size - len(head))


# fanout.v1 ------------------------------------------------------------------------------
# The JSON `data` a v1 publisher sends carries the same header as a raw payload (send time,
# publisher id, sequence), as 32 fixed-width hex digits right after `{"h":"`, then padding:
#   {"h":"<32 hex>","x":"xxxx"}
# A receiver finds it in the first bytes of a publication `{"ch":C,"d":{"h":"...` with one
# `find` and one `unhexlify`, without decoding the JSON.
V1_SUBPROTOCOL = "fanout.v1"
V1_MARK = b'"h":"'
_HEX = 2 * PAYLOAD_HEADER.size
_JSON_HEAD = b'{"h":"'
_JSON_MID = b'","x":"'
_JSON_TAIL = b'"}'
JSON_PAYLOAD_MIN = len(_JSON_HEAD) + _HEX + len(_JSON_MID) + len(_JSON_TAIL)
"""The smallest JSON data that holds the header (47 bytes)."""


def make_json_data(size: int, pub_id: int, seq: int, t_ns: int) -> bytes:
    """JSON data of exactly ``max(size, JSON_PAYLOAD_MIN)`` bytes carrying the header."""
    head = binascii.hexlify(PAYLOAD_HEADER.pack(t_ns, pub_id, seq))
    pad = b"x" * max(0, size - JSON_PAYLOAD_MIN)
    return _JSON_HEAD + head + _JSON_MID + pad + _JSON_TAIL


FULL_PAYLOAD = 1 << 24
"""A ``FrameParser`` prefix that keeps whole payloads (a history ``sub`` reply's ``pubs``)."""


def v1_sub(id: int, channel: str, since: tuple[int, str] | None = None) -> bytes:
    """The ``sub`` command (a text frame's payload), with ``since: {o, e}`` to recover."""
    ch = json.dumps(channel).encode()
    if since is None:
        return b'{"id":%d,"op":"sub","ch":%b}' % (id, ch)
    pos = json.dumps({"o": since[0], "e": since[1]}, separators=(",", ":")).encode()
    return b'{"id":%d,"op":"sub","ch":%b,"since":%b}' % (id, ch, pos)


def v1_pub_prefix(channel: str) -> bytes:
    """The bytes of a ``pub`` command (no id: no reply) before its data."""
    return b'{"op":"pub","ch":%b,"data":' % json.dumps(channel).encode()


def v1_prefix_len(channel: str) -> int:
    """Payload bytes a receiver keeps to find the header in a JSON publication
    (room for the envelope, an offset on history channels, and the header)."""
    return len(json.dumps(channel)) + 64 + _HEX


def v1_headers(prefixes: list[bytes]) -> list[bytes]:
    """The raw-layout headers (``PAYLOAD_HEADER``) of the publications among fanout.v1
    payload prefixes; replies, events and other data are left out."""
    out = []
    for p in prefixes:
        i = p.find(V1_MARK)
        if i >= 0:
            j = i + len(V1_MARK)
            if len(p) >= j + _HEX:
                try:
                    out.append(binascii.unhexlify(p[j : j + _HEX]))
                except binascii.Error:
                    continue
    return out


def v1_reply_status(prefix: bytes) -> str | None:
    """``"res"`` or ``"error"`` when the payload starts like a reply to command 1, else None."""
    if prefix.startswith(b'{"id":1,"res"'):
        return "res"
    if prefix.startswith(b'{"id":1,"error"'):
        return "error"
    return None


class FrameParser:
    """Incremental parser of server-to-client frames.

    Counts complete data messages (text/binary/continuation frames with FIN) and
    their payload bytes without copying payloads. With ``prefix > 0`` it also
    keeps the first ``prefix`` bytes of every data frame in ``self.prefixes``
    (the caller drains that list). Control frames are reported through
    ``self.pings`` (payloads to answer with a pong), ``self.pongs`` and ``self.closed``.
    """

    __slots__ = (
        "_buf",
        "_skip",
        "bytes",
        "closed",
        "frames",
        "pings",
        "pongs",
        "prefix",
        "prefixes",
    )

    def __init__(self, prefix: int = 0) -> None:
        self.prefix = prefix
        self.frames = 0
        self.bytes = 0
        self.closed = False
        self.pongs = 0
        self.pings: list[bytes] = []
        self.prefixes: list[bytes] = []
        self._buf = b""
        self._skip = 0

    def feed(self, data: bytes) -> int:
        """Consume bytes; return the number of data messages completed by them."""
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return 0
            data = data[self._skip :]
            self._skip = 0
        if self._buf:
            data = self._buf + data
            self._buf = b""
        n = len(data)
        i = 0
        count = 0
        prefix = self.prefix
        while n - i >= 2:
            b0 = data[i]
            b1 = data[i + 1]
            ln = b1 & 0x7F
            h = 2
            if ln == 126:
                if n - i < 4:
                    break
                ln = (data[i + 2] << 8) | data[i + 3]
                h = 4
            elif ln == 127:
                if n - i < 10:
                    break
                ln = int.from_bytes(data[i + 2 : i + 10], "big")
                h = 10
            masked = b1 & 0x80
            if masked:
                h += 4
            start = i + h
            end = start + ln
            op = b0 & 0x0F
            if op < 3:
                if end > n:
                    # Incomplete data frame: skip the rest of it without buffering,
                    # unless we still need its prefix (or it is masked).
                    if (prefix and n < start + min(prefix, ln)) or masked or start > n:
                        break
                    if prefix:
                        self.prefixes.append(data[start : start + prefix])
                    self._skip = end - n
                    self.bytes += ln
                    if b0 & 0x80:
                        count += 1
                    i = n
                    break
                if prefix:
                    self.prefixes.append(data[start : start + prefix])
                self.bytes += ln
                if b0 & 0x80:
                    count += 1
            else:
                if end > n:
                    break
                body = data[start:end]
                if masked:
                    body = _mask(body, data[start - 4 : start])
                if op == OP_PING:
                    self.pings.append(body)
                elif op == OP_PONG:
                    self.pongs += 1
                elif op == OP_CLOSE:
                    self.closed = True
            i = end
        if i < n:
            self._buf = data[i:]
        self.frames += count
        return count
