"""The load generator's fanout.v1 and HTTP pieces: JSON data carrying the timestamp header,
commands, the subprotocol handshake, and the keep-alive response parser."""

from __future__ import annotations

import json

import pytest

from bench import protocol as wsp
from bench.http_load import ResponseParser, build_request, publish_body


def test_json_data_is_valid_json_of_the_asked_size_carrying_the_header() -> None:
    data = wsp.make_json_data(64, 7, 42, 1_700_000_000_123_456_789)
    assert len(data) == 64
    obj = json.loads(data)
    assert set(obj) == {"h", "x"}
    header = bytes.fromhex(obj["h"])
    assert wsp.PAYLOAD_HEADER.unpack(header) == (1_700_000_000_123_456_789, 7, 42)


def test_json_data_never_gets_smaller_than_its_header() -> None:
    data = wsp.make_json_data(1, 1, 1, 1)
    assert len(data) == wsp.JSON_PAYLOAD_MIN
    json.loads(data)


def test_headers_are_found_in_a_publication_prefix_without_decoding_it() -> None:
    data = wsp.make_json_data(64, 3, 9, 123)
    publication = b'{"ch":"news","d":' + data + b"}"
    prefix = publication[: wsp.v1_prefix_len("news")]
    assert wsp.v1_headers([prefix]) == [wsp.PAYLOAD_HEADER.pack(123, 3, 9)]
    with_offset = b'{"ch":"news","o":12345,"d":' + data + b"}"
    assert wsp.v1_headers([with_offset[: wsp.v1_prefix_len("news")]]) == [
        wsp.PAYLOAD_HEADER.pack(123, 3, 9)
    ]


def test_replies_events_and_cut_headers_are_left_out() -> None:
    data = wsp.make_json_data(64, 3, 9, 123)
    cut = (b'{"ch":"news","d":' + data)[:40]
    prefixes = [b'{"id":1,"res":{}}', b'{"ev":"error","error":{"code":400}}', cut]
    assert wsp.v1_headers(prefixes) == []


def test_commands_are_json_objects() -> None:
    assert json.loads(wsp.v1_sub(1, "news")) == {"id": 1, "op": "sub", "ch": "news"}
    pub = wsp.v1_pub_prefix('we"ird') + b'{"a":1}' + b"}"
    assert json.loads(pub) == {"op": "pub", "ch": 'we"ird', "data": {"a": 1}}


def test_reply_status_tells_result_from_error() -> None:
    assert wsp.v1_reply_status(b'{"id":1,"res":{}}') == "res"
    assert wsp.v1_reply_status(b'{"id":1,"error":{"code":429') == "error"
    assert wsp.v1_reply_status(b'{"ch":"news","d":1}') is None


def test_handshake_offers_and_checks_the_subprotocol() -> None:
    key = wsp.make_key()
    req = wsp.handshake_request("127.0.0.1", 1, "/ws", key, "fanout.v1").decode()
    assert "\r\nSec-WebSocket-Protocol: fanout.v1\r\n" in req
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {wsp.accept_for(key).decode()}\r\n"
    )
    chosen = (head + "Sec-WebSocket-Protocol: fanout.v1\r\n\r\n").encode()
    assert wsp.parse_handshake_response(chosen, key, "fanout.v1") == (True, b"")
    with pytest.raises(wsp.HandshakeError, match="subprotocol"):
        wsp.parse_handshake_response((head + "\r\n").encode(), key, "fanout.v1")


def response(body: bytes, status: int = 200) -> bytes:
    return (
        f"HTTP/1.1 {status} OK\r\ncontent-length: {len(body)}\r\n"
        "content-type: application/json\r\n\r\n"
    ).encode() + body


def test_response_parser_counts_responses_split_anywhere() -> None:
    stream = response(b'{"result":{}}') + response(b"x" * 300, 503) + response(b"")
    for cut in range(len(stream) + 1):
        parser = ResponseParser()
        got = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert got == [200, 503, 200]
        assert parser.body_bytes == 13 + 300


def test_response_parser_refuses_responses_it_cannot_frame() -> None:
    with pytest.raises(ValueError, match="Content-Length"):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")


def test_publish_request_is_keep_alive_http_with_a_json_body() -> None:
    body = publish_body("news", b'{"a":1}')
    assert json.loads(body) == {"channel": "news", "data": {"a": 1}}
    req = build_request("127.0.0.1", 8000, "POST", "/api/publish", body, {"X-API-Key": "k"})
    head, _, rest = req.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/publish HTTP/1.1\r\n")
    assert b"\r\nX-API-Key: k" in head and f"Content-Length: {len(body)}".encode() in head
    assert b"close" not in head.lower()
    assert rest == body
    get = build_request("127.0.0.1", 8000, "GET", "/healthz")
    assert get.endswith(b"\r\n\r\n") and b"Content-Length" not in get
