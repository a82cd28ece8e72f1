"""Micro-benchmark of the fanout.v1 codec: microseconds per decode and per encode.

    python -m bench.codec [--number 200000] [--repeat 5]

Prints one JSON line (name -> best microseconds per call) on stdout and a table on
stderr, like the rest of the suite. The best of ``--repeat`` runs is reported because
the slower ones measure the machine, not the code. ``json (stdlib)`` rows put the figures
beside what a loads/dumps round trip would cost.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import timeit
from collections.abc import Callable

from app.services.protocol import (
    Pub,
    decode_binary_publish,
    decode_command,
    encode_binary_publication,
    encode_error,
    encode_json_publication,
    encode_reply,
    encode_text_publication,
    publication_of_pub,
)

PUB = b'{"id":7,"op":"pub","ch":"news","data":{"x":1,"msg":"hello world"}}'
"""The typical publish of the brief: 64-byte-ish JSON data with an id."""


def cases() -> dict[str, Callable[[], object]]:
    """The measured calls, by name."""
    pub = decode_command(PUB)
    assert isinstance(pub, Pub)
    data = bytes(pub.data)
    text_frame = PUB.decode()
    sub = b'{"id":8,"op":"sub","ch":"chat.room-1","since":{"o":10,"e":"abc"}}'
    bad = b'{"id":9,"op":"nope","ch":"news"}'
    binary = struct.pack("!BIB", 2, 7, 4) + b"news" + bytes(64)
    payload = bytes(64)
    stdlib_obj = json.loads(PUB)

    def decode_error() -> object:
        try:
            return decode_command(bad)
        except Exception as exc:
            return exc

    return {
        "decode pub (bytes)": lambda: decode_command(PUB),
        "decode pub (str)": lambda: decode_command(text_frame),
        "decode sub with since": lambda: decode_command(sub),
        "decode ping": lambda: decode_command(b'{"id":1,"op":"ping"}'),
        "decode unknown op (error path)": decode_error,
        "decode binary publish (64 B)": lambda: decode_binary_publish(binary),
        "encode json publication": lambda: encode_json_publication("news", data),
        "encode json publication + offset": lambda: encode_json_publication("news", data, 123456),
        "publication_of_pub (Raw data)": lambda: publication_of_pub(pub),
        "encode text publication": lambda: encode_text_publication("news", "hello world"),
        "encode binary publication + offset": lambda: encode_binary_publication(
            "news", payload, 123456
        ),
        "encode reply {}": lambda: encode_reply(7),
        "encode reply {o,e}": lambda: encode_reply(7, {"o": 12, "e": "abcd"}),
        "encode error with id": lambda: encode_error(403, "publish not allowed", 7),
        "json (stdlib) loads pub": lambda: json.loads(PUB),
        "json (stdlib) dumps publication": lambda: json.dumps(
            {"ch": "news", "d": stdlib_obj["data"]}, separators=(",", ":")
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Runs every case and prints the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__)
    parser.add_argument("--number", type=int, default=200_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best one counts")
    args = parser.parse_args(argv)
    figures: dict[str, float] = {}
    for name, call in cases().items():
        best = min(timeit.repeat(call, number=args.number, repeat=args.repeat))
        figures[name] = round(best / args.number * 1e6, 3)
    print(json.dumps({"scenario": "codec", "us_per_call": figures}, separators=(",", ":")))
    width = max(map(len, figures))
    for name, us in figures.items():
        print(f"{name:<{width}}  {us:7.3f} us", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
