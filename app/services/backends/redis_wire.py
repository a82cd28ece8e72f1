"""What the two Redis connections of a worker share: the channel and payload layout, and
which errors count as a lost connection. The payload layout is a contract between hosts.

A Fanout channel ``name`` is the Redis channel ``fanout:name``. A published payload is::

    origin  8 bytes: the publishing worker's random id (it skips its own messages)
    kind    1 byte:  b"T" text, b"B" binary, b"J" a fanout.v1 publication of JSON data
            (raw sockets get its bytes as text), b"H" a history channel's publication
            (its data starts with kind, offset and epoch); sequenced: what this version
            publishes
            (raw sockets get its bytes as text), b"E" a fanout.v1 event (join, leave: for
            fanout.v1 subscribers only); sequenced: what this version publishes
    seq     u64 big-endian: the origin's number for this message; it counts every message
            the origin published (1, 2, 3 ...), whatever the channel, dropped ones included
    prev    u64 big-endian: ``seq`` of the origin's previous message on this channel, or 0
            when the origin does not know it (its first message there, or its table of
            channels was cleared)
    data    the message bytes

A receiver keeps, per (channel, origin), the last ``seq`` it delivered: a payload whose
``seq`` is not above it is a duplicate (a retried write that had in fact gone through) and
is dropped; one whose ``prev`` is above it follows messages on that channel that never
arrived, so the channel's subscribers get a gap notice. ``prev`` chains the messages of one
channel, so a worker subscribed to some of an origin's channels sees no false gaps.

The kinds of version 1 (before sequencing), b"t" text, b"b" binary and b"j" JSON with the
data right after the kind byte, are still understood: delivered, with neither duplicate nor gap
detection. Any other kind byte is refused (dropped and counted as ``payload_refused``),
never delivered as binary. A version-1 host cannot read version-2 kinds (it would deliver
them as binary with the 16 sequence bytes in front), so upgrade every host of a deployment
together. A host from before presence refuses b"E" (counted): its subscribers miss the
join and leave events of newer hosts, nothing else.
"""

from __future__ import annotations

import struct

from redis.exceptions import RedisError

PREFIX = b"fanout:"
ORIGIN_BYTES = 8
TEXT = b"T"
BINARY = b"B"
JSON = b"J"
STAMPED = b"H"
"""A history channel's publication: kind, offset and epoch ahead of the data
(:func:`app.services.message.stamp_payload`); sequenced like the others."""
EVENT = b"E"
TEXT_V1 = b"t"
BINARY_V1 = b"b"
JSON_V1 = b"j"
SEQUENCE = struct.Struct(">QQ")
"""``seq`` and ``prev``, right after the kind byte."""
HEADER_BYTES = ORIGIN_BYTES + 1 + SEQUENCE.size
"""Origin, kind, seq and prev: where a version-2 payload's data starts."""

FAILURES = (RedisError, OSError, TimeoutError)
