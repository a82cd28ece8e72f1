"""POST /api/history: the request decoded, the publications encoded (Centrifugo's shapes)."""

from __future__ import annotations

import base64

import msgspec

from app.services.api.errors import ApiError, ErrorCode
from app.services.history.store import KIND_BINARY, KIND_JSON, Entry
from app.services.protocol.commands import BAD_CHANNEL_MESSAGE, valid_channel


class StreamPosition(msgspec.Struct, frozen=True, gc=False):
    """``{"offset":N,"epoch":E}``: where a client last was."""

    offset: int
    epoch: str


class HistoryRequest(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """``{"channel":C,"since"?:{...},"limit"?:N}``; unknown fields ignored."""

    channel: str
    since: StreamPosition | None = None
    limit: int | None = None


_decode = msgspec.json.Decoder(HistoryRequest).decode


def decode_history(body: bytes) -> HistoryRequest:
    """The request in ``body``; ApiError 400 when it is not one."""
    try:
        request = _decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, f"invalid history request: {exc}") from None
    if not valid_channel(request.channel):
        raise ApiError(ErrorCode.BAD_REQUEST, BAD_CHANNEL_MESSAGE)
    if request.limit is not None and request.limit < 0:
        raise ApiError(ErrorCode.BAD_REQUEST, "limit must be >= 0")
    return request


def encode_publications(entries: list[Entry]) -> bytes:
    """``[{"offset":N,"data":D}|{"offset":N,"text":S}|{"offset":N,"b64data":B}, ...]``."""
    parts = []
    for entry in entries:
        if entry.kind == KIND_JSON:
            parts.append(b'{"offset":%d,"data":%b}' % (entry.offset, entry.data))
        elif entry.kind == KIND_BINARY:
            b64 = base64.b64encode(entry.data)
            parts.append(b'{"offset":%d,"b64data":"%b"}' % (entry.offset, b64))
        else:
            text = msgspec.json.encode(entry.data.decode())
            parts.append(b'{"offset":%d,"text":%b}' % (entry.offset, text))
    return b"[" + b",".join(parts) + b"]"
