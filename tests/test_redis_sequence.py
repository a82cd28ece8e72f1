"""Exactly once across hosts: the sequence numbers in redis:// payloads, without a Redis.

The publisher numbers messages (:class:`RedisPublisher`, never connected here) and the
receiver judges them (:class:`SequenceTracker`).
"""

from __future__ import annotations

import logging

import pytest

from app.services.backends import redis_publisher
from app.services.backends.redis_publisher import RedisPublisher
from app.services.backends.redis_sequence import (
    AFTER_GAP,
    DUPLICATE,
    IN_ORDER,
    SequenceTracker,
)
from app.services.backends.redis_wire import (
    BINARY,
    HEADER_BYTES,
    ORIGIN_BYTES,
    PREFIX,
    SEQUENCE,
    TEXT,
)
from app.services.message import Message

A = b"origin-a"
B = b"origin-b"
ROOM = b"fanout:room"
NEWS = b"fanout:news"


def test_the_first_message_of_an_origin_is_delivered_without_a_gap() -> None:
    tracker = SequenceTracker()
    assert tracker.check(ROOM, A, 57, 41) == IN_ORDER  # joined late: 41 was never ours
    assert tracker.check(ROOM, A, 58, 57) == IN_ORDER
    assert (tracker.duplicates, tracker.gaps) == (0, 0)


def test_a_message_seen_before_is_dropped_as_a_duplicate() -> None:
    tracker = SequenceTracker()
    for seq in (1, 2, 3):
        assert tracker.check(ROOM, A, seq, seq - 1) == IN_ORDER
    assert tracker.check(ROOM, A, 3, 2) == DUPLICATE  # the retried write
    assert tracker.check(ROOM, A, 2, 1) == DUPLICATE  # an older one, late
    assert tracker.check(ROOM, A, 4, 3) == IN_ORDER
    assert tracker.duplicates == 2


def test_a_message_after_lost_ones_is_delivered_and_reported() -> None:
    tracker = SequenceTracker()
    assert tracker.check(ROOM, A, 1, 0) == IN_ORDER
    assert tracker.check(ROOM, A, 4, 3) == AFTER_GAP  # 2 and 3 never came
    assert tracker.check(ROOM, A, 5, 4) == IN_ORDER
    assert tracker.gaps == 1


def test_messages_on_channels_the_receiver_does_not_hold_are_no_gap() -> None:
    # The origin numbers all its messages; prev chains those of one channel, so a receiver
    # subscribed to "room" only is not misled by the numbers "news" used up.
    tracker = SequenceTracker()
    assert tracker.check(ROOM, A, 1, 0) == IN_ORDER
    # seq 2 and 3 went to "news", which this receiver does not hold
    assert tracker.check(ROOM, A, 4, 1) == IN_ORDER
    assert tracker.gaps == 0


def test_origins_and_channels_are_judged_apart() -> None:
    tracker = SequenceTracker()
    assert tracker.check(ROOM, A, 10, 0) == IN_ORDER
    assert tracker.check(ROOM, B, 3, 0) == IN_ORDER  # another worker's numbers
    assert tracker.check(NEWS, A, 11, 0) == IN_ORDER
    assert tracker.check(ROOM, B, 4, 3) == IN_ORDER
    assert tracker.check(ROOM, A, 12, 10) == IN_ORDER


def test_prev_zero_means_unknown_and_is_never_a_gap() -> None:
    tracker = SequenceTracker()
    assert tracker.check(ROOM, A, 1, 0) == IN_ORDER
    assert tracker.check(ROOM, A, 9, 0) == IN_ORDER  # the publisher cleared its table
    assert tracker.gaps == 0


def test_after_a_resync_a_jump_is_not_reported_but_a_duplicate_still_is() -> None:
    tracker = SequenceTracker()
    tracker.check(ROOM, A, 5, 4)
    tracker.resync()  # the subscribers were just told of the outage
    assert tracker.check(ROOM, A, 5, 4) == DUPLICATE
    assert tracker.check(ROOM, A, 9, 8) == IN_ORDER
    assert tracker.check(ROOM, A, 11, 10) == AFTER_GAP  # checked again from then on
    assert (tracker.duplicates, tracker.gaps) == (1, 1)


def test_a_channel_forgotten_or_not_retained_starts_afresh() -> None:
    tracker = SequenceTracker()
    tracker.check(ROOM, A, 5, 0)
    tracker.check(NEWS, A, 6, 0)
    tracker.forget(ROOM)
    assert tracker.size() == (1, 1)
    assert tracker.check(ROOM, A, 9, 8) == IN_ORDER  # first seen again: no gap
    tracker.retain({ROOM})
    assert tracker.size() == (1, 1)
    assert tracker.check(NEWS, A, 6, 0) == IN_ORDER  # forgotten, so not a duplicate either


def test_the_table_keeps_the_most_recently_heard_origins_per_channel() -> None:
    tracker = SequenceTracker(origins_max=3)
    origins = [bytes([i]) * ORIGIN_BYTES for i in range(4)]
    for origin in origins[:3]:
        tracker.check(ROOM, origin, 1, 0)
    tracker.check(ROOM, origins[0], 2, 1)  # heard again: origins[1] is now the oldest
    tracker.check(ROOM, origins[3], 1, 0)  # a fourth: origins[1] is forgotten
    assert tracker.size() == (1, 3)
    assert tracker.check(ROOM, origins[0], 2, 1) == DUPLICATE  # still known
    assert tracker.check(ROOM, origins[1], 1, 0) == IN_ORDER  # forgotten: first seen
    for i in range(1000):
        tracker.check(ROOM, i.to_bytes(ORIGIN_BYTES, "big"), 1, 0)
    assert tracker.size() == (1, 3)


def decode(payload: bytes) -> tuple[bytes, bytes, int, int, bytes]:
    seq, prev = SEQUENCE.unpack_from(payload, ORIGIN_BYTES + 1)
    kind = payload[ORIGIN_BYTES : ORIGIN_BYTES + 1]
    return payload[:ORIGIN_BYTES], kind, seq, prev, payload[HEADER_BYTES:]


def sent(publisher: RedisPublisher) -> list[tuple[bytes, tuple[bytes, bytes, int, int, bytes]]]:
    return [(channel, decode(payload)) for channel, payload in publisher._queue]


async def test_the_publisher_numbers_every_message_and_chains_each_channel() -> None:
    publisher = RedisPublisher("redis://127.0.0.1:1/0", A, queue_max=100)
    publisher.accepting = True
    publisher.publish("room", Message.from_text("r1"))
    publisher.publish("news", Message.from_bytes(b"n1"))
    publisher.publish("room", Message.from_text("r2"))
    assert sent(publisher) == [
        (PREFIX + b"room", (A, TEXT, 1, 0, b"r1")),
        (PREFIX + b"news", (A, BINARY, 2, 0, b"n1")),
        (PREFIX + b"room", (A, TEXT, 3, 1, b"r2")),
    ]


async def test_a_dropped_message_uses_up_its_number_so_receivers_see_the_gap() -> None:
    publisher = RedisPublisher("redis://127.0.0.1:1/0", A, queue_max=1)
    publisher.accepting = True
    publisher.publish("room", Message.from_text("kept"))
    publisher.publish("room", Message.from_text("queue full"))
    publisher._queue.clear()
    publisher.accepting = False
    publisher.publish("room", Message.from_text("redis down"))
    publisher.accepting = True
    publisher.publish("room", Message.from_text("next"))
    assert sent(publisher) == [(PREFIX + b"room", (A, TEXT, 4, 3, b"next"))]
    assert publisher.dropped == 2
    tracker = SequenceTracker()
    assert tracker.check(ROOM, A, 1, 0) == IN_ORDER
    assert tracker.check(ROOM, A, 4, 3) == AFTER_GAP


async def test_the_publishers_channel_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_publisher, "CHANNELS_MAX", 4)
    publisher = RedisPublisher("redis://127.0.0.1:1/0", A, queue_max=1000)
    publisher.accepting = True
    for i in range(100):
        publisher.publish(f"c{i}", Message.from_text("x"))
        assert len(publisher._last_seq) <= 4
    publisher.publish("c99", Message.from_text("y"))
    assert sent(publisher)[-1][1][2:4] == (101, 100)  # still chained


def test_a_flood_of_like_events_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    from app.services.backends.redis import EventLog

    log = EventLog("dropped duplicate message(s)")
    with caplog.at_level(logging.WARNING, logger="fanout"):
        for i in range(1000):
            log(f"channel 'c{i}'")
    lines = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
    assert lines == [
        "redis backend: dropped duplicate message(s) (1 since the last such line; "
        "latest: channel 'c0')"
    ]
