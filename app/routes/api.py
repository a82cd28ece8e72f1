"""POST /api/publish, /api/broadcast, /api/publish/{channel}, /api/presence,
/api/presence_stats: the HTTP API (PROTOCOL.md 3).

Thin: check the key, read the body within its limit, decode, call the publisher, encode.
Every refusal is ``{"error":{"code":C,"message":M}}`` with HTTP status C, counted in
/stats ``http_errors`` and logged in one line (never with the key).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.logging_setup import LOGGER_NAME
from app.routes.context import node_of, settings_of, stats_service
from app.services.api.codec import (
    Publish,
    decode_body_message,
    decode_broadcast,
    decode_channel,
    decode_publish,
    json_body_limit,
)
from app.services.api.errors import ApiError, ErrorCode, encode_error
from app.services.api.history import decode_history, encode_publications
from app.services.api.keys import ApiKeys
from app.services.api.publisher import ApiPublisher
from app.services.history.store import HistoryUnavailable
from app.services.protocol.commands import BAD_CHANNEL_MESSAGE, valid_channel

logger = logging.getLogger(LOGGER_NAME)

JSON: Final = "application/json"
METHODS: Final = (
    "/api/publish",
    "/api/broadcast",
    "/api/history",
    "/api/drain",
    "/api/presence",
    "/api/presence_stats",
)
"""The API's paths (besides /api/publish/{channel}), for 405 against 404."""
PRESENCE_BODY_LIMIT: Final = 65_536
"""Largest body of a presence request (``{"channel": C}`` and whatever fields ride along)."""
_NOT_ALLOWED: Final = HTTPStatus.METHOD_NOT_ALLOWED
_ALL_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

Handler = Callable[[Request], Awaitable[bytes]]


async def publish(request: Request) -> Response:
    """``{"channel":C,"data"|"text"|"b64data":...,"idempotency_key"?}`` -> ``{"result":{}}``."""
    return await _serve(request, _publish)


async def broadcast(request: Request) -> Response:
    """``{"channels":[...],"data":D}`` -> ``{"result":{"responses":[...]}}``, one per channel."""
    return await _serve(request, _broadcast)


async def publish_body(request: Request) -> Response:
    """The body is the message: ``text/*`` text, JSON content types JSON data, else binary."""
    return await _serve(request, _publish_body)


async def presence(request: Request) -> Response:
    """``{"channel":C}`` -> ``{"result":{"clients":{client:{"user":u,"info":i},...}}}``."""
    return await _serve(request, _presence)


async def presence_stats(request: Request) -> Response:
    """``{"channel":C}`` -> ``{"result":{"clients":N,"users":N}}``."""
    return await _serve(request, _presence_stats)


async def history(request: Request) -> Response:
    """``{"channel":C,"since"?:{"offset","epoch"},"limit"?}`` -> ``{"result":{"publications":
    [...],"offset":N,"epoch":E}}`` (Centrifugo's shape)."""
    return await _serve(request, _history)


async def unknown(request: Request) -> Response:
    """Any other /api path or method: 404 or 405, in the API's error shape."""
    path = request.url.path
    channel = path.removeprefix("/api/publish/")
    known = path in METHODS or (channel != path and channel != "" and "/" not in channel)
    if known and request.method != "POST":
        return _refuse(
            request, ApiError(_NOT_ALLOWED, f"method {request.method} not allowed: use POST")
        )
    return _refuse(request, ApiError(ErrorCode.NOT_FOUND, "unknown API method"))


async def _publish(request: Request) -> bytes:
    settings = settings_of(request)
    body = await read_body(request, json_body_limit(settings.max_message_bytes))
    result = await _publisher(request).publish(decode_publish(body, settings.max_message_bytes))
    return b'{"result":' + result + b"}"


async def _broadcast(request: Request) -> bytes:
    settings = settings_of(request)
    body = await read_body(request, json_body_limit(settings.max_message_bytes))
    command = decode_broadcast(body, settings.max_message_bytes)
    responses = await _publisher(request).broadcast(command)
    return b'{"result":{"responses":[' + b",".join(responses) + b"]}}"


async def _publish_body(request: Request) -> bytes:
    channel: str = request.path_params["channel"]
    if not valid_channel(channel):
        raise ApiError(ErrorCode.BAD_REQUEST, BAD_CHANNEL_MESSAGE)
    body = await read_body(request, settings_of(request).max_message_bytes)
    payload = decode_body_message(request.headers.get("content-type"), body)
    result = await _publisher(request).publish(Publish(channel, payload, None))
    return b'{"result":' + result + b"}"


async def _presence(request: Request) -> bytes:
    channel = await _presence_channel(request, "presence")
    return b'{"result":' + node_of(request).presence.presence(channel) + b"}"


async def _presence_stats(request: Request) -> bytes:
    channel = await _presence_channel(request, "presence_stats")
    clients, users = node_of(request).presence.stats(channel)
    return b'{"result":{"clients":%d,"users":%d}}' % (clients, users)


async def _presence_channel(request: Request, what: str) -> str:
    """The channel a presence request names; 404 where its rule keeps no presence."""
    body = await read_body(request, PRESENCE_BODY_LIMIT)
    channel = decode_channel(body, what)
    if not node_of(request).presence.enabled(channel):
        raise ApiError(ErrorCode.NOT_FOUND, "presence is not enabled on this channel")
    return channel


async def _history(request: Request) -> bytes:
    body = await read_body(request, 65_536)
    command = decode_history(body)
    node = node_of(request)
    retention = node.history.retention(command.channel)
    if retention is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"{command.channel} keeps no history")
    since = (command.since.offset, command.since.epoch) if command.since is not None else None
    try:
        position, entries = await node.history.read(
            command.channel, since, command.limit, retention
        )
    except HistoryUnavailable as exc:
        raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "history unavailable") from exc
    return b'{"result":{"publications":%b,"offset":%d,"epoch":%b}}' % (
        encode_publications(entries),
        position.offset,
        msgspec.json.encode(position.epoch),
    )


async def _serve(request: Request, handler: Handler) -> Response:
    try:
        api_keys(request).check(request.headers)
        content = await handler(request)
    except ApiError as exc:
        return _refuse(request, exc)
    return Response(content, media_type=JSON)


def _refuse(request: Request, exc: ApiError) -> Response:
    stats_service(request).http_error(exc.code)
    client = request.client
    peer = f"{client.host}:{client.port}" if client else "unknown"
    logger.warning(
        "api %s %s refused %d from %s: %s",
        request.method,
        request.url.path,
        exc.code,
        peer,
        exc.message[:200],
    )
    headers = {"WWW-Authenticate": "apikey"} if exc.code == ErrorCode.UNAUTHORIZED else None
    if exc.code == _NOT_ALLOWED:
        headers = {"Allow": "POST"}
    return Response(encode_error(exc.code, exc.message), exc.code, headers, JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; ApiError 413 past ``limit`` bytes, from Content-Length before
    reading where the client sent one, and from the bytes read in any case."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(ErrorCode.CONTENT_TOO_LARGE, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(ErrorCode.CONTENT_TOO_LARGE, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def api_keys(request: Request) -> ApiKeys:
    """The API keys, built from the settings on the first request and kept on the app."""
    state = request.app.state
    keys: ApiKeys | None = getattr(state, "api_keys", None)
    if keys is None:
        keys = state.api_keys = ApiKeys.from_settings(settings_of(request))
    return keys


def _publisher(request: Request) -> ApiPublisher:
    node = node_of(request)
    return ApiPublisher(
        node.broadcast, node.stats, node.backend.status, node.idempotency, node.history
    )


routes: list[BaseRoute] = [
    Route("/api/publish", publish, methods=["POST"]),
    Route("/api/broadcast", broadcast, methods=["POST"]),
    Route("/api/publish/{channel}", publish_body, methods=["POST"]),
    Route("/api/history", history, methods=["POST"]),
    Route("/api/presence", presence, methods=["POST"]),
    Route("/api/presence_stats", presence_stats, methods=["POST"]),
    # Last: what the others did not take, answered in the API's shape rather than Starlette's.
    Route("/api/{path:path}", unknown, methods=_ALL_METHODS),
]
