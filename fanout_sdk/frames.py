"""fanout.v1 frames for the client: commands out, replies and pushes in. No I/O here.

Every value this module decodes from the server is checked for shape; a frame that is
not fanout.v1 raises :class:`ValueError` (the client then closes the socket, as the
server does with 4501 for the client's unreadable frames).
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Final, Literal

SUBPROTOCOL: Final = "fanout.v1"
"""The subprotocol the client offers on ``/ws``."""
MAX_ID: Final = 4_294_967_295
"""Largest command id (u32: binary publishes carry it in four bytes)."""
BINARY_PUBLICATION: Final = 0x01
"""First byte of a binary publication pushed by the server."""
BINARY_PUBLISH: Final = 0x02
"""First byte of a binary publish sent by a client."""
FLAG_OFFSET: Final = 0x01
"""Binary publication flags bit: an offset (u64, big-endian) follows the flags."""

Kind = Literal["json", "text", "binary"]


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A place in a history channel: the offset of a publication and the epoch of the
    channel's history it belongs to (a new epoch means the old offsets are gone)."""

    offset: int
    epoch: str

    @classmethod
    def parse(cls, text: str) -> StreamPosition:
        """``"OFFSET:EPOCH"`` (as the tail command's ``--since`` takes it)."""
        offset, sep, epoch = text.partition(":")
        if not sep or not offset.isdigit():
            raise ValueError(f"expected OFFSET:EPOCH, got {text!r}")
        return cls(int(offset), epoch)

    def __str__(self) -> str:
        return f"{self.offset}:{self.epoch}"

    def to_json(self) -> dict[str, Any]:
        """The ``since`` field of a ``sub`` or ``history`` command."""
        return {"o": self.offset, "e": self.epoch}


@dataclass(frozen=True, slots=True)
class Publication:
    """One message on a channel: JSON ``data``, ``text`` or ``binary`` (see :attr:`kind`).

    ``offset`` is its place in the channel's history (None on channels without history).
    """

    channel: str
    kind: Kind
    data: Any = None
    """The JSON value, decoded (``kind == "json"``)."""
    text: str | None = None
    """The text (``kind == "text"``)."""
    binary: bytes | None = None
    """The bytes (``kind == "binary"``)."""
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One connection in a channel's presence: its user (token ``sub``) and token ``info``."""

    client: str
    user: str
    info: Any = None


@dataclass(frozen=True, slots=True)
class PresenceStats:
    """How many connections and distinct users a channel's presence holds."""

    clients: int
    users: int


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publish returned: on a history channel the publication's offset and epoch."""

    offset: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """A channel's current position (newest offset, epoch) and publications, oldest first."""

    offset: int
    epoch: str
    publications: list[Publication] = field(default_factory=list)

    @property
    def position(self) -> StreamPosition:
        """The channel's current position, to pass as ``since`` later."""
        return StreamPosition(self.offset, self.epoch)


# -- client -> server -----------------------------------------------------------------------


def encode_command(command_id: int, op: str, fields: dict[str, Any]) -> str:
    """A text frame ``{"id":N,"op":op,...fields}`` (every field as given: None is ``null``)."""
    body: dict[str, Any] = {"id": command_id, "op": op, **fields}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_binary_publish(command_id: int, channel: str, payload: bytes) -> bytes:
    """``0x02 | id u32 BE | channel length u8 | channel | payload``."""
    name = channel.encode()
    if not 1 <= len(name) <= 255:
        raise ValueError(f"bad channel name {channel!r}")
    return struct.pack(">BIB", BINARY_PUBLISH, command_id, len(name)) + name + payload


# -- server -> client -----------------------------------------------------------------------


def decode_text(frame: str) -> dict[str, Any]:
    """A text frame as a JSON object."""
    body = json.loads(frame)
    if not isinstance(body, dict):
        raise ValueError("a fanout.v1 frame must be a JSON object")
    return body


def decode_binary_publication(frame: bytes) -> Publication:
    """``0x01 | flags | [offset u64 BE] | channel length u8 | channel | payload``."""
    view = memoryview(frame)
    if len(view) < 3 or view[0] != BINARY_PUBLICATION:
        raise ValueError("not a binary publication")
    flags = view[1]
    at = 2
    offset: int | None = None
    if flags & FLAG_OFFSET:
        if len(view) < at + 8 + 1:
            raise ValueError("binary publication cut short")
        (offset,) = struct.unpack_from(">Q", view, at)
        at += 8
    length = view[at]
    at += 1
    if length == 0 or len(view) < at + length:
        raise ValueError("binary publication with a bad channel")
    channel = bytes(view[at : at + length]).decode()
    return Publication(channel, "binary", binary=bytes(view[at + length :]), offset=offset)


def publication_of(channel: str, body: dict[str, Any]) -> Publication:
    """A publication from a push (``{"ch","o"?,"d"|"s"}``) or a history entry
    (``{"o","d"|"s"|"b"}``; the HTTP API's ``{"offset","data"|"text"|"b64data"}`` too)."""
    offset = body.get("o", body.get("offset"))
    if offset is not None and not isinstance(offset, int):
        raise ValueError(f"bad offset {offset!r}")
    if "d" in body or "data" in body:
        return Publication(channel, "json", data=body.get("d", body.get("data")), offset=offset)
    text = body.get("s", body.get("text"))
    if isinstance(text, str):
        return Publication(channel, "text", text=text, offset=offset)
    b64 = body.get("b", body.get("b64data"))
    if isinstance(b64, str):
        return Publication(channel, "binary", binary=base64.b64decode(b64), offset=offset)
    raise ValueError("a publication without d, s or b")


def position_of(res: dict[str, Any]) -> StreamPosition | None:
    """``{"o":N,"e":E}`` (or ``offset``/``epoch``) in a reply, else None."""
    offset = res.get("o", res.get("offset"))
    epoch = res.get("e", res.get("epoch"))
    if isinstance(offset, int) and isinstance(epoch, str):
        return StreamPosition(offset, epoch)
    return None


def publications_of(channel: str, res: dict[str, Any]) -> list[Publication]:
    """The ``pubs`` (or ``publications``) of a reply, oldest first."""
    entries = res.get("pubs", res.get("publications")) or []
    if not isinstance(entries, list):
        raise ValueError("pubs must be a list")
    return [publication_of(channel, entry) for entry in entries if isinstance(entry, dict)]


def presence_of(res: dict[str, Any]) -> dict[str, ClientInfo]:
    """``{"clients":{id:{"user","info"}}}`` (or the API's ``{"presence":{...}}``)."""
    clients = res.get("clients", res.get("presence")) or {}
    if not isinstance(clients, dict):
        raise ValueError("clients must be an object")
    result: dict[str, ClientInfo] = {}
    for client, who in clients.items():
        who = who if isinstance(who, dict) else {}
        info = who.get("info", who.get("conn_info"))
        result[str(client)] = ClientInfo(str(client), str(who.get("user", "")), info)
    return result


def presence_stats_of(res: dict[str, Any]) -> PresenceStats:
    """``{"clients":N,"users":N}`` (or ``num_clients``/``num_users``)."""
    clients = res.get("clients", res.get("num_clients", 0))
    users = res.get("users", res.get("num_users", 0))
    return PresenceStats(int(clients), int(users))
