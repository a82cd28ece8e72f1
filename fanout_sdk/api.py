"""Server API clients for your backend: publish, broadcast, history and presence over
Fanout's HTTP API (``POST /api/*`` with ``X-API-Key``), on httpx.

:class:`FanoutApi` is synchronous, for Django views, Celery tasks and scripts;
:class:`AsyncFanoutApi` is the same for asyncio code. Make one per process and keep it:
it holds a connection pool (keep-alive connections are reused). Both are safe to share
between threads or tasks; a sync client made before a fork (Celery's prefork workers)
opens a new pool in the child on first use instead of sharing sockets with the parent.

Every refusal raises :class:`~fanout_sdk.errors.ApiError` with the server's code (the
HTTP status: 400 bad request, 401 wrong key, 403 API disabled, 404 no such method on this
server, 413 too large, 503 backend down) and message; a request that got no answer
(connection refused, timeout) raises it with code 0 and the httpx error as its cause.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Self

import httpx

from fanout_sdk.errors import ApiError
from fanout_sdk.frames import (
    ClientInfo,
    HistoryResult,
    PresenceStats,
    PublishResult,
    StreamPosition,
    position_of,
    presence_of,
    presence_stats_of,
    publications_of,
)

_UNSET: Final[Any] = object()
DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=5.0)
"""10 s for an answer, 5 s to connect: a publish from a web request should not hang it."""
DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)
"""The pool: up to 100 connections at once, 20 kept alive between requests."""


class _Base:
    """What both clients share: URLs, request bodies, reading answers. No I/O."""

    def __init__(self, url: str, api_key: str) -> None:
        base = url.rstrip("/")
        self._base = base if base.endswith("/api") else base + "/api"
        self._headers = {"X-API-Key": api_key, "User-Agent": "fanout_sdk"}

    def _url(self, method: str) -> str:
        return f"{self._base}/{method}"

    @staticmethod
    def _message(
        data: Any, text: str | None, b64data: str | None, binary: bytes | None
    ) -> dict[str, Any]:
        if binary is not None:
            if b64data is not None:
                raise ValueError("give b64data or binary, not both")
            b64data = base64.b64encode(binary).decode()
        given = (data is not _UNSET) + (text is not None) + (b64data is not None)
        if given != 1:
            raise ValueError("give exactly one of data, text, b64data and binary")
        if text is not None:
            return {"text": text}
        if b64data is not None:
            return {"b64data": b64data}
        return {"data": data}

    @staticmethod
    def _history_body(
        channel: str, since: StreamPosition | None, limit: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"channel": channel}
        if since is not None:
            # Centrifugo's spelling and fanout.v1's: the server ignores the one it does
            # not use (unknown fields are ignored), so either settles it.
            body["since"] = {
                "offset": since.offset,
                "epoch": since.epoch,
                "o": since.offset,
                "e": since.epoch,
            }
        if limit is not None:
            body["limit"] = limit
        return body

    @staticmethod
    def _result(response: httpx.Response) -> dict[str, Any]:
        """The ``result`` object of an answer, or the ApiError it carries."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                code = int(error.get("code") or response.status_code)
                raise ApiError(code, str(error.get("message", "")))
            result = body.get("result")
            if response.is_success and isinstance(result, dict):
                return result
        text = response.text[:200] if response.content else response.reason_phrase
        raise ApiError(response.status_code, text or "unexpected answer")

    @staticmethod
    def _publish_result(result: dict[str, Any]) -> PublishResult:
        position = position_of(result)
        if position is None:
            return PublishResult()
        return PublishResult(position.offset, position.epoch)

    @classmethod
    def _broadcast_results(cls, result: dict[str, Any]) -> list[PublishResult | ApiError]:
        out: list[PublishResult | ApiError] = []
        for item in result.get("responses") or []:
            error = item.get("error") if isinstance(item, dict) else None
            if isinstance(error, dict):
                out.append(ApiError(int(error.get("code", 0)), str(error.get("message", ""))))
            else:
                inner = item.get("result") if isinstance(item, dict) else None
                out.append(cls._publish_result(inner if isinstance(inner, dict) else {}))
        return out

    @staticmethod
    def _history_result(channel: str, result: dict[str, Any]) -> HistoryResult:
        position = position_of(result) or StreamPosition(0, "")
        return HistoryResult(position.offset, position.epoch, publications_of(channel, result))


class FanoutApi(_Base):
    """The HTTP API, synchronous: ``FanoutApi("http://fanout:8000", "key").publish(...)``.

    ``url``: the server's base URL (a trailing ``/api`` is fine too). ``timeout``:
    seconds, or an ``httpx.Timeout``. ``client``: your own ``httpx.Client`` (then its
    settings are used, and closing it is yours).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(url, api_key)
        self._timeout = timeout
        self._limits = limits
        self._own = client is None
        self._client = client
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def publish(
        self,
        channel: str,
        data: Any = _UNSET,
        *,
        text: str | None = None,
        b64data: str | None = None,
        binary: bytes | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publish JSON ``data`` (None is JSON null), ``text``, or binary (``b64data``
        base64, or ``binary`` bytes) on ``channel``. ``idempotency_key``: the same key on
        the same channel within 5 minutes publishes once (safe to retry)."""
        body = {"channel": channel, **self._message(data, text, b64data, binary)}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return self._publish_result(self._post("publish", body))

    def broadcast(
        self,
        channels: Sequence[str],
        data: Any = _UNSET,
        *,
        text: str | None = None,
        b64data: str | None = None,
        binary: bytes | None = None,
    ) -> list[PublishResult | ApiError]:
        """Publish one message on several channels; one result (or error) per channel,
        in order."""
        body = {"channels": list(channels), **self._message(data, text, b64data, binary)}
        return self._broadcast_results(self._post("broadcast", body))

    def history(
        self, channel: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryResult:
        """The channel's position and its publications after ``since`` (up to ``limit``)."""
        result = self._post("history", self._history_body(channel, since, limit))
        return self._history_result(channel, result)

    def presence(self, channel: str) -> dict[str, ClientInfo]:
        """Who is on the channel, by client id."""
        return presence_of(self._post("presence", {"channel": channel}))

    def presence_stats(self, channel: str) -> PresenceStats:
        """How many connections and users are on the channel."""
        return presence_stats_of(self._post("presence_stats", {"channel": channel}))

    def close(self) -> None:
        """Close the connection pool (if this object made it)."""
        if self._own and self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._own and (self._client is None or self._pid != os.getpid()):
                # A pool inherited through fork() shares sockets with the parent: not used.
                self._pid = os.getpid()
                self._client = httpx.Client(timeout=self._timeout, limits=self._limits)
            assert self._client is not None
            return self._client

    def _post(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http().post(self._url(method), json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"no answer from {self._base}: {exc!r}") from exc
        return self._result(response)


class AsyncFanoutApi(_Base):
    """The HTTP API for asyncio code: the same methods as :class:`FanoutApi`, awaited.

    ``async with AsyncFanoutApi(url, key) as api:``, or keep one for the program's life
    and ``await api.aclose()`` at the end.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(url, api_key)
        self._own = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout, limits=limits)

    async def publish(
        self,
        channel: str,
        data: Any = _UNSET,
        *,
        text: str | None = None,
        b64data: str | None = None,
        binary: bytes | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """See :meth:`FanoutApi.publish`."""
        body = {"channel": channel, **self._message(data, text, b64data, binary)}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return self._publish_result(await self._post("publish", body))

    async def broadcast(
        self,
        channels: Sequence[str],
        data: Any = _UNSET,
        *,
        text: str | None = None,
        b64data: str | None = None,
        binary: bytes | None = None,
    ) -> list[PublishResult | ApiError]:
        """See :meth:`FanoutApi.broadcast`."""
        body = {"channels": list(channels), **self._message(data, text, b64data, binary)}
        return self._broadcast_results(await self._post("broadcast", body))

    async def history(
        self, channel: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryResult:
        """See :meth:`FanoutApi.history`."""
        result = await self._post("history", self._history_body(channel, since, limit))
        return self._history_result(channel, result)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        """See :meth:`FanoutApi.presence`."""
        return presence_of(await self._post("presence", {"channel": channel}))

    async def presence_stats(self, channel: str) -> PresenceStats:
        """See :meth:`FanoutApi.presence_stats`."""
        return presence_stats_of(await self._post("presence_stats", {"channel": channel}))

    async def aclose(self) -> None:
        """Close the connection pool (if this object made it)."""
        if self._own:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _post(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(self._url(method), json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"no answer from {self._base}: {exc!r}") from exc
        return self._result(response)
