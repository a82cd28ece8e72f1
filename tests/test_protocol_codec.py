"""The fanout.v1 codec: every frame gets a typed command or a documented error, never a crash."""

from __future__ import annotations

import json
import struct
from typing import Any

import msgspec
import pytest

from app.services.protocol import (
    CHANNEL_RE,
    MAX_COMMAND_ID,
    BinaryPub,
    Connect,
    ErrorCode,
    FrameUnreadable,
    History,
    Ping,
    Presence,
    PresenceStats,
    ProtocolError,
    Pub,
    Refresh,
    Since,
    Sub,
    Unsub,
    decode_binary_publication,
    decode_binary_publish,
    decode_command,
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
    valid_channel,
)

HOSTILE_TEXTS = [
    'quote " and \\ backslash',
    "line\nbreak\r\ttab \x00 nul \x1f unit \x7f del",
    "separators \u2028 \u2029",
    "</script><script>alert(1)</script>",
    "unicode é 中文 🎉",
    '{"looks":"like json"}',
    "",
]


def command_error(frame: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_command(frame)
    return info.value


def unreadable(frame: bytes | str) -> FrameUnreadable:
    with pytest.raises(FrameUnreadable) as info:
        decode_command(frame)
    return info.value


def pub_frame(data: bytes, id: int | None = 7, ch: str = "news") -> bytes:
    head = b"" if id is None else b'"id":%d,' % id
    return b'{%b"op":"pub","ch":%b,"data":%b}' % (head, json.dumps(ch).encode(), data)


def binary_publish(id: int, ch: bytes, payload: bytes) -> bytes:
    return struct.pack("!BIB", 0x02, id, len(ch)) + ch + payload


# Text commands: one per op


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"op":"connect"}', Connect()),
        ('{"op":"connect","token":"t"}', Connect(token="t")),
        ('{"id":1,"op":"sub","ch":"news"}', Sub(id=1, ch="news")),
        (
            '{"op":"sub","ch":"news","token":"s","since":{"o":5,"e":"ab"}}',
            Sub(ch="news", token="s", since=Since(o=5, e="ab")),
        ),
        ('{"op":"unsub","ch":"news"}', Unsub(ch="news")),
        ('{"op":"pub","ch":"news","text":"hi"}', Pub(ch="news", text="hi")),
        ('{"op":"history","ch":"news"}', History(ch="news")),
        (
            '{"op":"history","ch":"news","since":{"o":0,"e":"x"},"limit":0}',
            History(ch="news", since=Since(o=0, e="x"), limit=0),
        ),
        ('{"op":"presence","ch":"news"}', Presence(ch="news")),
        ('{"op":"presence_stats","ch":"news"}', PresenceStats(ch="news")),
        ('{"op":"refresh","token":"t"}', Refresh(token="t")),
        ('{"op":"ping"}', Ping()),
        ('{"id":4294967295,"op":"ping"}', Ping(id=MAX_COMMAND_ID)),
    ],
)
def test_each_op_decodes_into_its_own_struct(frame: str, expected: Any) -> None:
    assert decode_command(frame) == expected
    assert decode_command(frame.encode()) == expected


def test_a_command_without_an_id_has_id_none_and_one_with_an_id_keeps_it() -> None:
    assert decode_command(b'{"op":"ping"}').id is None
    assert decode_command(b'{"id":42,"op":"ping"}').id == 42


def test_pub_data_bytes_are_kept_verbatim_with_whitespace_and_key_order() -> None:
    data = b'{"b": 1,  "a":[1, 2]}'
    for frame in (pub_frame(data), pub_frame(data).decode()):
        pub = decode_command(frame)
        assert isinstance(pub, Pub)
        assert pub.has_data and pub.text is None
        assert bytes(pub.data) == data


def test_pub_data_that_is_not_an_object_is_kept_verbatim_too() -> None:
    for data in (b"1.50", b'"s\\u00e9"', b"[ ]", b"true", b"-0", b"1e400", '"é 🎉"'.encode()):
        pub = decode_command(pub_frame(data))
        assert isinstance(pub, Pub)
        assert bytes(pub.data) == data


def test_pub_data_null_is_a_json_publication_of_null() -> None:
    pub = decode_command(pub_frame(b"null"))
    assert isinstance(pub, Pub)
    assert pub.has_data and bytes(pub.data) == b"null"


def test_pub_text_null_means_absent_so_data_alone_is_fine() -> None:
    pub = decode_command(b'{"op":"pub","ch":"n","text":null,"data":1}')
    assert isinstance(pub, Pub) and pub.text is None and bytes(pub.data) == b"1"


def test_pub_data_survives_reuse_of_a_mutable_input_buffer() -> None:
    buffer = bytearray(pub_frame(b'{"x":1}'))
    pub = decode_command(buffer)
    buffer[:] = b" " * len(buffer)
    assert isinstance(pub, Pub) and bytes(pub.data) == b'{"x":1}'
    assert isinstance(decode_command(memoryview(pub_frame(b"2"))), Pub)


def test_pub_with_both_data_and_text_is_400_carrying_the_id() -> None:
    error = command_error(b'{"id":3,"op":"pub","ch":"n","data":1,"text":"a"}')
    assert (error.code, error.id) == (400, 3)
    assert "exactly one of data or text" in error.message


def test_pub_with_neither_data_nor_text_is_400_carrying_the_id() -> None:
    error = command_error(b'{"id":3,"op":"pub","ch":"n"}')
    assert (error.code, error.id) == (400, 3)
    assert "got neither" in error.message


def test_unknown_fields_are_ignored() -> None:
    frame = b'{"id":1,"op":"sub","ch":"n","future":{"deep":[1,2]},"x":null}'
    assert decode_command(frame) == Sub(id=1, ch="n")


def test_op_may_come_after_the_other_fields() -> None:
    assert decode_command(b'{"ch":"n","id":2,"op":"unsub"}') == Unsub(id=2, ch="n")


def test_null_optional_fields_mean_absent() -> None:
    frame = b'{"op":"sub","ch":"n","token":null,"since":null,"id":null}'
    assert decode_command(frame) == Sub(ch="n")


# Frames that cannot be read at all: the caller closes with 4501


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"   ",
        b"hello",
        b"{",
        b'{"op":"ping"',
        b'{"op":"ping"} trailing',
        b'{"op":"ping"}{"op":"ping"}',
        b'{"op":"ping",}',
        b"{'op':'ping'}",
        b'\xef\xbb\xbf{"op":"ping"}',
        b'{"id":"x", nope',
        b'{"op":"pub","ch":"n","data":{bad}}',
        b'{"op":"pub","ch":"n","text":"\xff"}',
        b'{"op":"pub","ch":"n","data":"\xff\xfe"}',
        b'{"op":"pub","ch":"n","data":"\\ud800"}',
        b'{"op":"pub","ch":"\xc3"}',
        "not json",
    ],
)
def test_a_frame_that_is_not_json_is_unreadable(frame: bytes | str) -> None:
    unreadable(frame)


@pytest.mark.parametrize("frame", ["[]", '[{"op":"ping"}]', "1", '"ping"', "null", "true"])
def test_json_that_is_not_an_object_is_unreadable(frame: str) -> None:
    assert unreadable(frame).reason == "frame is not a JSON object"


def test_a_str_frame_with_lone_surrogates_is_unreadable() -> None:
    unreadable('{"op":"pub","ch":"n","text":"\ud800"}')


def test_data_nested_beyond_the_recursion_limit_is_unreadable_and_shallow_nesting_is_fine() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert unreadable(pub_frame(deep)).reason == "JSON nested too deeply"
    shallow = b"[" * 200 + b"]" * 200
    pub = decode_command(pub_frame(shallow))
    assert isinstance(pub, Pub) and bytes(pub.data) == shallow


def test_unreadable_reasons_fit_a_close_frame() -> None:
    for frame in (b"", b"[]", b"x", pub_frame(b"[" * 5000), b'{"op":"pub","ch":"n","data":"\xff"}'):
        reason = unreadable(frame).reason
        assert reason.isascii() and len(reason) <= 123
    assert FrameUnreadable("x").close_code == 4501


# Readable frames that are not valid commands: 400, with the id when it is usable


def test_unknown_op_with_an_id_is_400_carrying_the_id() -> None:
    error = command_error(b'{"id":9,"op":"subscribe","ch":"n"}')
    assert (error.code, error.id) == (ErrorCode.BAD_REQUEST, 9)
    assert error.message == "unknown op 'subscribe'"


def test_unknown_op_without_an_id_is_400_without_an_id() -> None:
    error = command_error(b'{"op":"nope"}')
    assert (error.code, error.id) == (400, None)


def test_a_long_unknown_op_is_cut_short_in_the_message() -> None:
    error = command_error(b'{"id":1,"op":"%b"}' % (b"x" * 10_000))
    assert len(error.message) < 60


def test_missing_op_is_400_carrying_the_id() -> None:
    error = command_error(b'{"id":5,"ch":"n"}')
    assert (error.code, error.id, error.message) == (400, 5, "missing field op")


def test_an_op_that_is_not_a_string_is_400_carrying_the_id() -> None:
    error = command_error(b'{"id":5,"op":["pub"]}')
    assert (error.code, error.id, error.message) == (400, 5, "op must be a string")


def test_a_repeated_op_is_400() -> None:
    assert command_error(b'{"id":5,"op":"ping","op":"pub"}').id == 5


@pytest.mark.parametrize(
    "id",
    [b"0", b"-1", b"7.0", b"1.5", b'"7"', b"true", b"false", b"[]", b"{}", b"4294967296", b"1e3"],
)
def test_an_id_that_is_not_a_positive_u32_integer_is_400_without_an_id(id: bytes) -> None:
    error = command_error(b'{"id":%b,"op":"ping"}' % id)
    assert (error.code, error.id) == (400, None)
    assert error.message == "id must be an integer from 1 to 4294967295"


def test_a_bad_id_is_reported_before_an_unknown_op() -> None:
    error = command_error(b'{"id":0,"op":"nope"}')
    assert error.id is None and "id must be" in error.message


def test_missing_ch_is_400_carrying_the_id_and_naming_the_field() -> None:
    for op in (b"sub", b"unsub", b"pub", b"history", b"presence", b"presence_stats"):
        error = command_error(b'{"id":11,"op":"%b","text":"t"}' % op)
        assert (error.code, error.id) == (400, 11)
        assert "`ch`" in error.message and op.decode() in error.message


@pytest.mark.parametrize(
    "frame",
    [
        b'{"id":2,"op":"sub","ch":1}',
        b'{"id":2,"op":"sub","ch":null}',
        b'{"id":2,"op":"sub","ch":"n","token":1}',
        b'{"id":2,"op":"sub","ch":"n","since":"5"}',
        b'{"id":2,"op":"sub","ch":"n","since":{"o":5}}',
        b'{"id":2,"op":"sub","ch":"n","since":{"o":-1,"e":"x"}}',
        b'{"id":2,"op":"sub","ch":"n","since":{"o":1.5,"e":"x"}}',
        b'{"id":2,"op":"history","ch":"n","limit":-1}',
        b'{"id":2,"op":"history","ch":"n","limit":"10"}',
        b'{"id":2,"op":"pub","ch":"n","text":5}',
        b'{"id":2,"op":"refresh"}',
        b'{"id":2,"op":"refresh","token":null}',
        b'{"id":2,"op":"connect","token":[]}',
    ],
)
def test_a_missing_or_wrong_typed_field_is_400_carrying_the_id(frame: bytes) -> None:
    error = command_error(frame)
    assert (error.code, error.id) == (400, 2)
    assert error.message.startswith("invalid ")


# Channel names


BAD_CHANNELS = [
    "",
    "x" * 129,
    "a:b",
    ":internal",
    "café",
    "中文",
    "new s",
    "news\n",
    "a/b",
    "a\x00b",
    "tab\t",
    "😀",
]


@pytest.mark.parametrize("name", BAD_CHANNELS)
def test_a_bad_channel_name_is_400_carrying_the_id(name: str) -> None:
    frame = json.dumps({"id": 8, "op": "sub", "ch": name})
    error = command_error(frame)
    assert (error.code, error.id) == (400, 8)
    assert "invalid channel name" in error.message
    assert not valid_channel(name)


def test_a_bad_channel_name_in_a_pub_is_400_too() -> None:
    error = command_error(pub_frame(b"1", id=4, ch="a:b"))
    assert (error.code, error.id) == (400, 4)


def test_names_of_every_allowed_character_up_to_128_long_are_valid() -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-@=#"
    for name in (alphabet, "x" * 128, "a", "chat.room-1", "user#42", "a@b=c", *alphabet):
        assert valid_channel(name), name
        assert CHANNEL_RE.fullmatch(name)
        assert decode_command(json.dumps({"op": "sub", "ch": name})) == Sub(ch=name)


def test_no_other_character_is_allowed_in_a_channel_name() -> None:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-@=#")
    for code in range(0x3000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        assert valid_channel(char) == (char in allowed), repr(char)


# Nothing a client sends raises anything but the two documented errors


SAMPLE_FRAMES = [
    b'{"id":7,"op":"pub","ch":"news","data":{"x":1,"msg":"hello world"}}',
    b'{"id":1,"op":"sub","ch":"n","since":{"o":5,"e":"ep"},"token":"t"}',
    b'{"op":"pub","ch":"n","text":"caf\xc3\xa9 \\" \\\\ \\u2028"}',
    b'{"id":3,"op":"history","ch":"n","limit":10}',
]


def test_every_truncation_and_byte_substitution_gives_a_command_or_a_documented_error() -> None:
    outcomes: set[str] = set()
    for frame in SAMPLE_FRAMES:
        variants = [frame[:cut] for cut in range(len(frame))]
        for position in range(len(frame)):
            for byte in (0x00, 0x22, 0x5C, 0x7B, 0x7D, 0x3A, 0x2C, 0x31, 0xFF, 0xC3):
                variants.append(frame[:position] + bytes((byte,)) + frame[position + 1 :])
        for variant in variants:
            try:
                decode_command(variant)
                outcomes.add("ok")
            except ProtocolError as error:
                assert error.code == 400
                assert error.id is None or 1 <= error.id <= MAX_COMMAND_ID
                outcomes.add("400")
            except FrameUnreadable:
                outcomes.add("unreadable")
    assert outcomes == {"ok", "400", "unreadable"}


# Binary publish (client -> server)


def test_binary_publish_round_trip() -> None:
    payload = bytes(range(256)) * 3
    frame = binary_publish(77, b"news", payload)
    assert decode_binary_publish(frame) == BinaryPub(77, "news", payload)
    assert decode_binary_publish(bytearray(frame)) == BinaryPub(77, "news", payload)
    assert decode_binary_publish(memoryview(frame)) == BinaryPub(77, "news", payload)


def test_binary_publish_with_id_0_wants_no_reply() -> None:
    assert decode_binary_publish(binary_publish(0, b"n", b"x")).id is None


def test_binary_publish_keeps_the_largest_id_and_an_empty_payload() -> None:
    assert decode_binary_publish(binary_publish(MAX_COMMAND_ID, b"n", b"")) == BinaryPub(
        MAX_COMMAND_ID, "n", b""
    )


def test_binary_publish_cut_at_every_byte_is_unreadable_until_the_channel_is_complete() -> None:
    frame = binary_publish(5, b"news", b"payload")
    header_and_channel = 6 + 4
    for cut in range(len(frame) + 1):
        if cut < header_and_channel:
            with pytest.raises(FrameUnreadable):
                decode_binary_publish(frame[:cut])
        else:
            # The payload runs to the end of the frame, so a shorter one is still a frame.
            assert decode_binary_publish(frame[:cut]) == BinaryPub(
                5, "news", b"payload"[: cut - header_and_channel]
            )


@pytest.mark.parametrize("first", [0x00, 0x01, 0x03, 0x7B, 0xFF])
def test_a_binary_frame_of_another_type_is_unreadable(first: int) -> None:
    frame = bytes((first,)) + binary_publish(1, b"n", b"x")[1:]
    with pytest.raises(FrameUnreadable):
        decode_binary_publish(frame)


@pytest.mark.parametrize("channel", [b"", b"a:b", b"caf\xc3\xa9", b"\xff\xfe", b"x" * 129])
def test_binary_publish_to_a_bad_channel_is_400_carrying_the_id(channel: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_binary_publish(binary_publish(12, channel, b"x"))
    assert (info.value.code, info.value.id) == (400, 12)
    with pytest.raises(ProtocolError) as info:
        decode_binary_publish(binary_publish(0, channel, b"x"))
    assert info.value.id is None


def test_any_binary_frame_gives_a_publish_or_a_documented_error() -> None:
    frame = binary_publish(9, b"news", b"\x00\x01")
    outcomes: set[str] = set()
    for position in range(len(frame)):
        for byte in range(256):
            variant = frame[:position] + bytes((byte,)) + frame[position + 1 :]
            try:
                decode_binary_publish(variant)
                outcomes.add("ok")
            except ProtocolError as error:
                assert error.code == 400
                outcomes.add("400")
            except FrameUnreadable:
                outcomes.add("unreadable")
    assert outcomes == {"ok", "400", "unreadable"}


# Errors


def test_protocol_error_takes_only_the_contract_codes() -> None:
    assert [int(code) for code in ErrorCode] == [400, 401, 403, 404, 409, 413, 429, 503]
    error = ProtocolError(409, "already subscribed", id=3)
    assert (error.code, error.message, error.id) == (ErrorCode.CONFLICT, "already subscribed", 3)
    assert "409" in str(error)
    with pytest.raises(ValueError):
        ProtocolError(418, "teapot")


def test_an_error_with_an_id_is_a_reply_and_without_one_an_event() -> None:
    assert encode_error(403, "forbidden", 5) == (
        b'{"id":5,"error":{"code":403,"message":"forbidden"}}'
    )
    assert encode_error(ErrorCode.BAD_REQUEST, "bad") == (
        b'{"ev":"error","error":{"code":400,"message":"bad"}}'
    )


def test_error_messages_are_escaped() -> None:
    for text in HOSTILE_TEXTS:
        assert json.loads(encode_error(400, text, 1)) == {
            "id": 1,
            "error": {"code": 400, "message": text},
        }


def test_a_decode_error_encodes_into_a_reply_carrying_its_id() -> None:
    error = command_error(b'{"id":6,"op":"sub"}')
    reply = json.loads(encode_error(error.code, error.message, error.id))
    assert reply["id"] == 6 and reply["error"]["code"] == 400


# Replies and events


def test_a_reply_carries_the_id_and_the_result() -> None:
    assert encode_reply(7) == b'{"id":7,"res":{}}'
    assert encode_reply(7, {}) == b'{"id":7,"res":{}}'
    assert json.loads(encode_reply(8, {"o": 3, "e": "ab"})) == {"id": 8, "res": {"o": 3, "e": "ab"}}


def test_a_reply_writes_raw_values_verbatim() -> None:
    data = msgspec.Raw(b'{"b": 1,  "a":[1, 2]}')
    reply = encode_reply(2, {"pubs": [{"o": 1, "d": data}]})
    assert reply == b'{"id":2,"res":{"pubs":[{"o":1,"d":{"b": 1,  "a":[1, 2]}}]}}'


def test_join_and_leave_events_carry_who() -> None:
    who = b'{"client":"c1","user":"42","info":{"name":"Ann"}}'
    assert (
        encode_join("chat", "c1", "42", {"name": "Ann"})
        == b'{"ch":"chat","ev":"join","who":%b}' % who
    )
    assert json.loads(encode_leave("chat", "c1", "")) == {
        "ch": "chat",
        "ev": "leave",
        "who": {"client": "c1", "user": "", "info": None},
    }


def test_gap_and_unsub_events_have_their_fields() -> None:
    assert encode_gap("news", "history expired") == (
        b'{"ch":"news","ev":"gap","reason":"history expired"}'
    )
    assert encode_unsub("news", 4503, "forbidden") == (
        b'{"ch":"news","ev":"unsub","code":4503,"reason":"forbidden"}'
    )


def test_events_are_valid_json_for_hostile_text() -> None:
    for text in HOSTILE_TEXTS:
        assert json.loads(encode_gap("n", text))["reason"] == text
        assert json.loads(encode_unsub("n", 1, text))["reason"] == text
        assert json.loads(encode_join("n", text, text, text))["who"]["user"] == text


# Publications (framed once, the same bytes for every subscriber)


def test_a_json_publication_splices_the_publishers_bytes_verbatim() -> None:
    data = b'{"b": 1,  "a":[1, 2]}'
    assert encode_json_publication("news", data) == b'{"ch":"news","d":{"b": 1,  "a":[1, 2]}}'
    assert encode_json_publication("news", data, 17) == (
        b'{"ch":"news","o":17,"d":{"b": 1,  "a":[1, 2]}}'
    )


def test_a_decoded_pub_reaches_protocol_subscribers_with_its_data_verbatim() -> None:
    data = '{"z": "é",\n "a" : [1,2 ,3]}'.encode()
    for frame in (pub_frame(data), pub_frame(data).decode()):
        pub = decode_command(frame)
        assert isinstance(pub, Pub)
        push = publication_of_pub(pub)
        assert push == b'{"ch":"news","d":' + data + b"}"
        assert json.loads(push) == {"ch": "news", "d": json.loads(data)}
        assert publication_of_pub(pub, 3) == b'{"ch":"news","o":3,"d":' + data + b"}"


def test_a_text_publication_has_s_and_an_optional_offset() -> None:
    assert encode_text_publication("news", "hi") == b'{"ch":"news","s":"hi"}'
    assert encode_text_publication("news", "hi", 0) == b'{"ch":"news","o":0,"s":"hi"}'


def test_text_publications_are_valid_json_for_hostile_text() -> None:
    for text in HOSTILE_TEXTS:
        push = encode_text_publication("news", text, 5)
        assert json.loads(push) == {"ch": "news", "o": 5, "s": text}
        # Control characters are escaped: none reaches the wire raw.
        assert not any(byte < 0x20 for byte in push)


def test_unicode_text_stays_utf8_and_round_trips() -> None:
    push = encode_text_publication("news", "é 中文 🎉 \u2028")
    assert "é 中文 🎉".encode() in push
    assert json.loads(push.decode())["s"] == "é 中文 🎉 \u2028"


def test_a_pub_with_text_reaches_protocol_subscribers_as_s() -> None:
    pub = decode_command('{"op":"pub","ch":"news","text":"a \\"q\\" é"}')
    assert isinstance(pub, Pub)
    assert json.loads(publication_of_pub(pub, 9)) == {"ch": "news", "o": 9, "s": 'a "q" é'}


def test_raw_subscribers_get_the_exact_bytes_of_data_or_the_text() -> None:
    data = b'{"b": 1,  "a":[1, 2]}'
    pub = decode_command(pub_frame(data))
    assert isinstance(pub, Pub)
    payload = raw_payload_of_pub(pub)
    assert payload == data and type(payload) is bytes
    text = decode_command('{"op":"pub","ch":"n","text":"plain é"}')
    assert isinstance(text, Pub)
    assert raw_payload_of_pub(text) == "plain é".encode()


def test_raw_text_reaches_protocol_subscribers_as_s() -> None:
    raw = '{"not": "parsed"} \\ "'
    assert json.loads(encode_text_publication("news", raw)) == {"ch": "news", "s": raw}


def test_a_binary_publication_without_offset_is_parsed_back() -> None:
    frame = encode_binary_publication("news", b"\x00\xffbin")
    assert frame == b"\x01\x00\x04news\x00\xffbin"
    assert decode_binary_publication(frame) == decode_binary_publication(bytearray(frame))
    parsed = decode_binary_publication(frame)
    assert (parsed.ch, parsed.payload, parsed.offset) == ("news", b"\x00\xffbin", None)


def test_a_binary_publication_with_offset_is_parsed_back() -> None:
    for offset in (0, 1, 2**32, 2**64 - 1):
        frame = encode_binary_publication("news", b"p", offset)
        assert frame[:2] == b"\x01\x01"
        assert struct.unpack_from("!Q", frame, 2)[0] == offset
        parsed = decode_binary_publication(frame)
        assert (parsed.ch, parsed.payload, parsed.offset) == ("news", b"p", offset)


def test_a_client_binary_publish_becomes_a_binary_publication_with_the_same_payload() -> None:
    publish = decode_binary_publish(binary_publish(3, b"news", b"\x10\x20"))
    frame = encode_binary_publication(publish.ch, publish.payload, 4)
    parsed = decode_binary_publication(frame)
    assert (parsed.ch, parsed.payload, parsed.offset) == ("news", b"\x10\x20", 4)


def test_a_binary_publication_refuses_what_its_header_cannot_hold() -> None:
    with pytest.raises(ValueError):
        encode_binary_publication("x" * 256, b"")
    with pytest.raises(ValueError):
        encode_binary_publication("news", b"", 2**64)
    with pytest.raises(ValueError):
        encode_binary_publication("news", b"", -1)


def test_a_binary_publication_cut_at_every_byte_is_unreadable_until_the_channel_is_complete() -> (
    None
):
    for offset, head in ((None, 3), (5, 11)):
        frame = encode_binary_publication("news", b"payload", offset)
        for cut in range(len(frame)):
            if cut < head + 4:
                with pytest.raises(FrameUnreadable):
                    decode_binary_publication(frame[:cut])
            else:
                assert decode_binary_publication(frame[:cut]).payload == frame[head + 4 : cut]
