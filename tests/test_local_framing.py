"""The local:// backend's wire format: length-prefixed frames between the workers of a host."""

from __future__ import annotations

import struct

import pytest

from app.services import framing
from app.services.framing import (
    DATA_BINARY,
    DATA_EVENT,
    DATA_JSON,
    DATA_TEXT,
    GAP,
    HELLO,
    FrameDecoder,
    FrameError,
)
from app.services.message import Message

MAX = 1 << 20


def decode_all(stream: bytes, max_frame_bytes: int = MAX) -> list[framing.Frame]:
    """Every frame in ``stream``, fed in one piece; the stream must end on a frame boundary."""
    decoder = FrameDecoder(max_frame_bytes)
    decoder.feed(stream)
    frames = list(decoder)
    assert decoder.buffered == 0
    return frames


def header(length: int, kind: int, chlen: int) -> bytes:
    """A frame header as the module documents it: uint32 length, uint8 kind, uint16 chlen."""
    return struct.pack("!IBH", length, kind, chlen)


def sample_stream() -> tuple[bytes, list[framing.Frame]]:
    """One frame of every kind, back to back, and the frames they must decode to."""
    parts = [
        framing.encode_control(HELLO, payload=b"4242"),
        framing.encode("room", Message.from_text("héllo, wörld ✓")),
        framing.encode("bin", Message.from_bytes(b"\x00\xff\x80binary\x00")),
        framing.encode_control(GAP),
        framing.encode("", Message.from_text("")),
    ]
    expected = [
        framing.Frame(HELLO, "", b"4242"),
        framing.Frame(DATA_TEXT, "room", "héllo, wörld ✓".encode()),
        framing.Frame(DATA_BINARY, "bin", b"\x00\xff\x80binary\x00"),
        framing.Frame(GAP, "", b""),
        framing.Frame(DATA_TEXT, "", b""),
    ]
    return b"".join(parts), expected


def test_a_text_message_comes_back_as_the_same_text_on_the_same_channel() -> None:
    sent = Message.from_text("héllo ✓ " * 100)
    [frame] = decode_all(framing.encode("lobby-ü", sent))
    assert frame.kind == DATA_TEXT
    assert frame.channel == "lobby-ü"
    received = frame.message()
    assert received.is_text
    assert received.text == sent.text
    assert received.data == sent.data


def test_a_json_publication_stays_json_so_every_worker_frames_it_as_data() -> None:
    sent = Message.from_json(b'{"b": 1,  "a": [1, 2]}')
    [frame] = decode_all(framing.encode("news", sent))
    assert frame.kind == DATA_JSON
    received = frame.message()
    assert received.is_json and received.data == sent.data
    assert received.envelope("news").data == b'{"ch":"news","d":{"b": 1,  "a": [1, 2]}}'


def test_an_event_stays_an_event_its_own_envelope_and_nothing_for_raw_sockets() -> None:
    sent = Message.event(b'{"ch":"news","ev":"join","who":{"client":"c","user":"u","info":null}}')
    [frame] = decode_all(framing.encode("news", sent))
    assert frame.kind == DATA_EVENT
    received = frame.message()
    assert received.is_event and received.data == sent.data
    assert received.envelope("news") is received


@pytest.mark.parametrize(
    "sent",
    [
        Message.from_json(b'{"a": 1}').stamped(7, "e1"),
        Message.from_text("t\u00e9xt").stamped(1, "epoch"),
        Message.from_bytes(bytes(range(256))).stamped(2**40, ""),
    ],
)
def test_a_history_publication_keeps_its_kind_offset_and_epoch(sent: Message) -> None:
    [frame] = decode_all(framing.encode("h", sent))
    received = frame.message()
    assert (received.offset, received.epoch) == (sent.offset, sent.epoch)
    assert (received.text, received.is_json, received.data) == (sent.text, sent.is_json, sent.data)


def test_a_binary_message_comes_back_as_the_same_bytes_and_stays_binary() -> None:
    payload = bytes(range(256)) * 4
    [frame] = decode_all(framing.encode("room", Message.from_bytes(payload)))
    assert frame.kind == DATA_BINARY
    assert frame.channel == "room"
    received = frame.message()
    assert not received.is_text
    assert received.data == payload


def test_binary_bytes_that_happen_to_be_valid_utf8_stay_binary() -> None:
    [frame] = decode_all(framing.encode("room", Message.from_bytes(b"plain ascii")))
    assert frame.kind == DATA_BINARY
    assert not frame.message().is_text


@pytest.mark.parametrize(
    ("kind", "channel", "payload"),
    [
        (HELLO, "", b"12345"),
        (GAP, "", b""),
        (DATA_TEXT, "c", b"t"),
        (DATA_BINARY, "c", b"\x00"),
        (DATA_JSON, "c", b'{"a": 1}'),
    ],
)
def test_every_kind_of_frame_round_trips(kind: int, channel: str, payload: bytes) -> None:
    assert decode_all(framing.encode_control(kind, channel, payload)) == [
        framing.Frame(kind, channel, payload)
    ]


def test_a_message_larger_than_64k_round_trips() -> None:
    payload = b"x" * 200_000
    [frame] = decode_all(framing.encode("big", Message.from_bytes(payload)))
    assert frame.payload == payload


def test_frames_written_back_to_back_come_out_in_order() -> None:
    stream, expected = sample_stream()
    assert decode_all(stream) == expected


def test_a_stream_split_at_any_byte_decodes_to_the_same_frames() -> None:
    stream, expected = sample_stream()
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder(MAX)
        decoder.feed(stream[:cut])
        frames = list(decoder)
        decoder.feed(stream[cut:])
        frames += list(decoder)
        assert frames == expected, f"split at byte {cut}"
        assert decoder.buffered == 0


def test_a_stream_fed_one_byte_at_a_time_decodes_to_the_same_frames() -> None:
    stream, expected = sample_stream()
    decoder = FrameDecoder(MAX)
    frames: list[framing.Frame] = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        frames += list(decoder)
    assert frames == expected
    assert decoder.buffered == 0


def test_an_incomplete_frame_waits_for_more_bytes() -> None:
    frame = framing.encode("room", Message.from_text("hello"))
    decoder = FrameDecoder(MAX)
    decoder.feed(frame[:-1])
    assert decoder.next() is None
    assert decoder.next() is None  # asking again changes nothing
    assert decoder.buffered == len(frame) - 1
    decoder.feed(frame[-1:])
    assert decoder.next() == framing.Frame(DATA_TEXT, "room", b"hello")
    assert decoder.next() is None


def test_a_frame_at_the_size_limit_is_accepted_and_one_byte_over_is_refused() -> None:
    frame = framing.encode("room", Message.from_bytes(b"p" * 100))
    announced = len(frame) - 4  # the length field counts what follows it
    assert decode_all(frame, max_frame_bytes=announced)[0].payload == b"p" * 100
    decoder = FrameDecoder(announced - 1)
    decoder.feed(frame)
    with pytest.raises(FrameError):
        decoder.next()


def test_an_oversized_length_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder(MAX)
    decoder.feed(header(0xFFFFFFFF, DATA_BINARY, 0))  # 4 GiB announced, nothing sent yet
    with pytest.raises(FrameError, match="length"):
        decoder.next()


@pytest.mark.parametrize("kind", [0, 8, 255])
def test_an_unknown_kind_is_refused(kind: int) -> None:
    decoder = FrameDecoder(MAX)
    decoder.feed(header(3 + 1, kind, 0) + b"x")
    with pytest.raises(FrameError):
        decoder.next()


def test_a_channel_longer_than_its_frame_is_refused() -> None:
    decoder = FrameDecoder(MAX)
    decoder.feed(header(3 + 4, DATA_TEXT, 5) + b"room")
    with pytest.raises(FrameError):
        decoder.next()


@pytest.mark.parametrize("length", [0, 1, 2])
def test_a_length_too_short_for_kind_and_channel_length_is_refused(length: int) -> None:
    decoder = FrameDecoder(MAX)
    decoder.feed(header(length, DATA_TEXT, 0))
    with pytest.raises(FrameError):
        decoder.next()


def test_ascii_text_is_garbage_not_a_frame() -> None:
    decoder = FrameDecoder(MAX)
    decoder.feed(b"GET / HTTP/1.1\r\n\r\n")  # 'GET ' read as a length is over 1 GiB
    with pytest.raises(FrameError):
        decoder.next()


def test_a_channel_name_that_is_not_utf8_is_refused() -> None:
    decoder = FrameDecoder(MAX)
    decoder.feed(header(3 + 2, DATA_TEXT, 2) + b"\xff\xfe")
    with pytest.raises(ValueError):  # UnicodeDecodeError; the backend drops the link on both
        decoder.next()


def test_frames_before_garbage_are_still_delivered() -> None:
    good = framing.encode("room", Message.from_text("first"))
    decoder = FrameDecoder(MAX)
    decoder.feed(good + header(3, 99, 0))
    assert decoder.next() == framing.Frame(DATA_TEXT, "room", b"first")
    with pytest.raises(FrameError):
        decoder.next()
