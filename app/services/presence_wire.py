"""What workers tell each other about presence, on the backend's control channel.

Three messages, JSON, each naming its origin worker (``id``) and that process's ``boot``
(random per process, as in the heartbeat, so a restarted worker reusing a pid is not taken
for its late predecessor):

- ``presence``: the changes of the last 100 ms, in order (``ops``): ``["+", ch, client,
  user, info]`` a member joined, ``["-", ch, client, ts]`` one left (``ts`` wall-clock
  seconds), ``["left", ch, user, ts, origin]`` the origin sent the ``leave`` event of the
  departure stamped (``ts``, ``origin``).
- ``presence_digest``: every member of the origin, ``{ch: [[client, user, info], ...]}``,
  with ``n`` their number; sent every heartbeat interval.
- ``presence_bye``: the origin stops; forget its members now.

Deltas and digests share one counter per origin (``seq``): a receiver applies each only if
it is newer than what it has, so a late or repeated message never brings a member back.
Every message starts with ``{"type":"presence`` (:data:`PREFIX`), which is how the node
tells them from heartbeats without decoding.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import msgspec


class Add(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="+"):
    """A member joined ``ch``."""

    ch: str
    client: str
    user: str
    info: msgspec.Raw


class Remove(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="-"):
    """A member left ``ch`` at wall-clock ``ts``."""

    ch: str
    client: str
    ts: float


class Left(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="left"):
    """The ``leave`` event of ``user`` on ``ch`` (departure stamped ``ts``, ``origin``) went
    out: other workers forget that departure."""

    ch: str
    user: str
    ts: float
    origin: str


Op: TypeAlias = Add | Remove | Left


class Entry(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One member in a digest."""

    client: str
    user: str
    info: msgspec.Raw


class Delta(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="presence"):
    """Changes since the origin's previous message."""

    id: str
    boot: str
    seq: int
    ops: list[Op]


class Digest(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="presence_digest"):
    """Every member of the origin, ``n`` of them."""

    id: str
    boot: str
    seq: int
    n: int
    channels: dict[str, list[Entry]]


class Bye(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="presence_bye"):
    """The origin stops."""

    id: str
    boot: str


Control: TypeAlias = Delta | Digest | Bye

PREFIX: Final = b'{"type":"presence'
"""How every presence control message starts (msgspec writes the tag first)."""

encode: Final = msgspec.json.Encoder().encode
decode: Final = msgspec.json.Decoder(Control).decode
