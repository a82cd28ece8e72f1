"""Publishing for the HTTP API: backend check, idempotency, one Message per channel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from app.services.api.codec import Broadcast, Payload, Publish
from app.services.api.errors import ApiError, ErrorCode, encode_error
from app.services.broadcast import BroadcastService
from app.services.history.service import HistoryService
from app.services.history.store import HistoryUnavailable
from app.services.idempotency import (
    IdempotencyConflict,
    IdempotencyStore,
    IdempotencyUnavailable,
    run_once,
)
from app.services.protocol.commands import BAD_CHANNEL_MESSAGE, valid_channel
from app.services.stats import StatsService

EMPTY_RESULT: Final = b"{}"
"""A publication's result on a channel without history (``{"offset","epoch"}`` with)."""


class ApiPublisher:
    """Publishes what the HTTP API decoded, and says what to answer.

    An ``idempotency_key`` acts per channel, as in Centrifugo: the same key on the same
    channel within 5 minutes publishes once and answers with the first result, whatever
    the body of the repeat (the first one wins, even if the data differs); on another
    channel it is another key. A broadcast applies it to each of its channels.
    """

    def __init__(
        self,
        broadcast: BroadcastService,
        stats: StatsService,
        backend_status: Callable[[], dict[str, Any]],
        store: IdempotencyStore,
        history: HistoryService,
    ) -> None:
        self._history = history
        self._broadcast = broadcast
        self._stats = stats
        self._backend_status = backend_status
        self._store = store

    async def publish(self, request: Publish) -> bytes:
        """The ``result`` object of one publish; ApiError 503 or 409 when it cannot be."""
        self._check_backend()
        try:
            return await self._publish_once(
                request.channel, request.payload, request.idempotency_key
            )
        except IdempotencyConflict as exc:
            raise ApiError(ErrorCode.CONFLICT, str(exc)) from exc
        except IdempotencyUnavailable as exc:
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "idempotency store unavailable") from exc

    async def broadcast(self, request: Broadcast) -> list[bytes]:
        """One response per channel, in order: ``{"result":{...}}`` or ``{"error":{...}}``."""
        self._check_backend()
        responses = []
        for channel in request.channels:
            if not valid_channel(channel):
                responses.append(encode_error(ErrorCode.BAD_REQUEST, BAD_CHANNEL_MESSAGE))
                continue
            try:
                result = await self._publish_once(channel, request.payload, request.idempotency_key)
            except IdempotencyConflict as exc:
                responses.append(encode_error(ErrorCode.CONFLICT, str(exc)))
            except IdempotencyUnavailable:
                responses.append(
                    encode_error(ErrorCode.SERVICE_UNAVAILABLE, "idempotency store unavailable")
                )
            else:
                responses.append(b'{"result":' + result + b"}")
        return responses

    def _check_backend(self) -> None:
        # Local subscribers would still get the message, but other workers and hosts would
        # not: refuse, so the caller retries rather than believing it was delivered.
        if self._backend_status().get("status") != "up":
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "backend down: publication refused")

    async def _publish_once(self, channel: str, payload: Payload, key: str | None) -> bytes:
        if key is None:
            return await self._publish(channel, payload)
        # Channel names cannot hold ":", so "channel:key" names one pair only.
        return await run_once(
            self._store, f"{channel}:{key}", lambda: self._publish(channel, payload)
        )

    async def _publish(self, channel: str, payload: Payload) -> bytes:
        retention = self._history.retention(channel)
        if retention is None:
            self._broadcast.publish(channel, payload.message())
            self._stats.api_published()
            return EMPTY_RESULT
        try:
            position = await self._history.publish(channel, payload.message(), retention)
        except HistoryUnavailable as exc:
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "history unavailable") from exc
        self._stats.api_published()
        return b'{"offset":%d,"epoch":%b}' % (position.offset, msgspec.json.encode(position.epoch))
