"""Unit tests of the load generator's wire protocol: handshake, frame encoder, frame parser."""

from __future__ import annotations

import base64
import os
import struct

import pytest

from bench import protocol as wsp


def server_frame(payload: bytes, opcode: int = wsp.OP_BINARY, fin: bool = True) -> bytes:
    """An unmasked server-to-client frame (the reference encoding of RFC 6455 5.2)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return struct.pack(">BB", b0, n) + payload
    if n < 65536:
        return struct.pack(">BBH", b0, 126, n) + payload
    return struct.pack(">BBQ", b0, 127, n) + payload


def test_accept_matches_rfc_example() -> None:
    # RFC 6455 section 1.3
    assert wsp.accept_for(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_request_has_required_headers() -> None:
    key = wsp.make_key()
    assert len(base64.b64decode(key)) == 16
    req = wsp.handshake_request("127.0.0.1", 8000, "/ws/broadcast", key).decode()
    assert req.startswith("GET /ws/broadcast HTTP/1.1\r\n")
    assert req.endswith("\r\n\r\n")
    for header in (
        "Host: 127.0.0.1:8000",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ):
        assert header + "\r\n" in req


def response(
    key: bytes, status: str = "101 Switching Protocols", accept: bytes | None = None
) -> bytes:
    acc = accept if accept is not None else wsp.accept_for(key)
    return (
        f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {acc.decode()}\r\n\r\n"
    ).encode()


def test_handshake_response_incomplete_then_complete_with_early_frame() -> None:
    key = wsp.make_key()
    raw = response(key) + server_frame(b"hi")
    done, rest = wsp.parse_handshake_response(raw[:20], key)
    assert not done
    done, rest = wsp.parse_handshake_response(raw, key)
    assert done
    assert rest == server_frame(b"hi")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: AAAA\r\n\r\n",
    ],
)
def test_handshake_rejects_refusal_and_bad_accept(raw: bytes) -> None:
    with pytest.raises(wsp.HandshakeError):
        wsp.parse_handshake_response(raw, wsp.make_key())


def unmask_client_frame(frame: bytes) -> tuple[int, bool, bytes]:
    b0, b1 = frame[0], frame[1]
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    i = 2
    if n == 126:
        n = struct.unpack(">H", frame[2:4])[0]
        i = 4
    elif n == 127:
        n = struct.unpack(">Q", frame[2:10])[0]
        i = 10
    mask = frame[i : i + 4]
    body = frame[i + 4 :]
    assert len(body) == n
    return b0 & 0x0F, bool(b0 & 0x80), bytes(b ^ mask[k % 4] for k, b in enumerate(body))


@pytest.mark.parametrize("size", [0, 1, 3, 64, 125, 126, 1000, 65535, 65536, 70000])
def test_encode_frame_masks_and_roundtrips(size: int) -> None:
    payload = os.urandom(size)
    op, fin, body = unmask_client_frame(wsp.encode_frame(payload, wsp.OP_BINARY))
    assert (op, fin, body) == (wsp.OP_BINARY, True, payload)


def test_encode_frame_with_given_mask_and_opcode() -> None:
    frame = wsp.encode_frame(b"abcd", wsp.OP_TEXT, mask=b"\x01\x02\x03\x04", fin=False)
    assert frame == bytes([0x01, 0x84, 1, 2, 3, 4]) + bytes([0x60, 0x60, 0x60, 0x60])


def test_parser_counts_frames_of_every_length_class() -> None:
    stream = b"".join(server_frame(b"x" * n) for n in (0, 5, 125, 126, 300, 65536))
    p = wsp.FrameParser()
    assert p.feed(stream) == 6
    assert p.frames == 6
    assert p.bytes == 0 + 5 + 125 + 126 + 300 + 65536


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_parser_handles_any_split(chunk: int) -> None:
    payloads = [
        wsp.make_payload(n, 7, i, 123456789 + i) for i, n in enumerate((16, 64, 200, 70000))
    ]
    stream = b"".join(server_frame(p) for p in payloads)
    p = wsp.FrameParser(prefix=wsp.PAYLOAD_MIN)
    for i in range(0, len(stream), chunk):
        p.feed(stream[i : i + chunk])
    assert p.frames == 4
    assert p.bytes == sum(len(x) for x in payloads)
    assert [wsp.PAYLOAD_HEADER.unpack(x) for x in p.prefixes] == [
        (123456789 + i, 7, i) for i in range(4)
    ]
    assert p._buf == b"" and p._skip == 0


def test_parser_counts_fragmented_message_once_and_reports_control_frames() -> None:
    stream = (
        server_frame(b"he", wsp.OP_TEXT, fin=False)
        + server_frame(b"pi", wsp.OP_PING)
        + server_frame(b"llo", wsp.OP_CONT, fin=True)
        + server_frame(b"\x03\xe8", wsp.OP_CLOSE)
    )
    p = wsp.FrameParser()
    assert p.feed(stream) == 1
    assert p.pings == [b"pi"]
    assert p.closed


def test_parser_skips_large_payload_without_buffering() -> None:
    frame = server_frame(b"y" * 100_000)
    p = wsp.FrameParser()
    p.feed(frame[:1000])
    assert p.frames == 1 and p._skip == len(frame) - 1000 and p._buf == b""
    p.feed(frame[1000:] + server_frame(b"z"))
    assert p.frames == 2 and p._skip == 0


def test_payload_layout() -> None:
    p = wsp.make_payload(64, 3, 9, 42)
    assert len(p) == 64
    assert wsp.PAYLOAD_HEADER.unpack_from(p) == (42, 3, 9)
    assert len(wsp.make_payload(4, 1, 1, 1)) == wsp.PAYLOAD_MIN
