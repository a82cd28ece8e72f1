"""The admin key (FANOUT_ADMIN_KEY): what guards /stats and /metrics when it is set, and
POST /api/drain always."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.routes.context import settings_of, stats_service

Endpoint = Callable[[Request], Awaitable[Response]]

KEY_HEADER = "x-admin-key"
UNAUTHORIZED = {"error": {"code": 401, "message": "admin key required"}}
NO_KEY_SET = {"error": {"code": 403, "message": "disabled: set FANOUT_ADMIN_KEY to use it"}}


def admin_only(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering 401 unless the request presents the admin key (when one is set).

    The key comes as ``X-Admin-Key: K`` or ``Authorization: Bearer K`` and is compared in
    constant time. Without FANOUT_ADMIN_KEY the endpoint is open, as it always was.
    """
    return _guard(endpoint, key_required=False)


def admin_key_required(endpoint: Endpoint) -> Endpoint:
    """:func:`admin_only` for endpoints that act rather than read (POST /api/drain): without
    FANOUT_ADMIN_KEY they are not open but disabled, answering 403."""
    return _guard(endpoint, key_required=True)


def _guard(endpoint: Endpoint, *, key_required: bool) -> Endpoint:
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        key = settings_of(request).admin_key
        if not key and key_required:
            stats_service(request).http_error(403)
            return JSONResponse(NO_KEY_SET, status_code=403)
        if key:
            presented = presented_keys(request.headers)
            if not any(_same(candidate, key) for candidate in presented):
                client = request.client
                stats_service(request).admin_refused(
                    request.url.path,
                    f"{client.host}:{client.port}" if client else "unknown",
                    "wrong" if presented else "missing",
                )
                return JSONResponse(
                    UNAUTHORIZED,
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="fanout admin"'},
                )
        return await endpoint(request)

    return guarded


def presented_keys(headers: Headers) -> list[str]:
    """The keys a request presents: its X-Admin-Key and its Authorization bearer token."""
    keys = headers.getlist(KEY_HEADER)
    for value in headers.getlist("authorization"):
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            keys.append(token.strip())
    return keys


def _same(presented: str, key: str) -> bool:
    # Starlette decodes header bytes as latin-1: encoding back gives the bytes as sent.
    return hmac.compare_digest(presented.encode("latin-1"), key.encode("ascii"))
