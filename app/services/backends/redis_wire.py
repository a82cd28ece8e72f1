"""What the two Redis connections of a worker share: the channel and payload layout, the
connect timeout, and which errors count as a lost connection.

A Fanout channel ``name`` is the Redis channel ``fanout:name``. A published payload is::

    origin  8 bytes: the publishing worker's random id (it skips its own messages)
    kind    1 byte:  b"t" text, b"b" binary, b"j" a fanout.v1 publication of JSON data
    data    the message bytes
"""

from __future__ import annotations

from redis.exceptions import RedisError

PREFIX = b"fanout:"
ORIGIN_BYTES = 8
TEXT = b"t"
BINARY = b"b"
JSON = b"j"
CONNECT_TIMEOUT = 2.0

FAILURES = (RedisError, OSError, TimeoutError)
