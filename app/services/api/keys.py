"""Who may use the HTTP API: the keys of FANOUT_API_KEYS, checked in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Final

from app.config import Settings
from app.services.api.errors import ApiError, ErrorCode

DISABLED_MESSAGE: Final = "HTTP API disabled: set FANOUT_API_KEYS"
_SCHEME: Final = "apikey"


class ApiKeys:
    """The configured keys (several, for rotation); built once from the settings.

    A request names its key in ``X-API-Key: K`` or ``Authorization: apikey K`` (Centrifugo's
    two headers; the scheme is case-insensitive). Not in the URL: query strings end up in
    access logs. Each configured key is compared with :func:`hmac.compare_digest`, all of
    them every time, so the time taken says nothing about which key came close.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: list[str]) -> None:
        self._keys = tuple(k.encode() for k in keys if k)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        """The keys of ``FANOUT_API_KEYS``: comma separated, blanks around them ignored."""
        return cls([part.strip() for part in settings.api_keys.split(",")])

    @property
    def enabled(self) -> bool:
        """False when no key is configured: the API answers 403 to everyone."""
        return bool(self._keys)

    def check(self, headers: Mapping[str, str]) -> None:
        """Return if ``headers`` carry a configured key; else raise 403 (API disabled)
        or 401 (no key, or a wrong one)."""
        if not self._keys:
            raise ApiError(ErrorCode.FORBIDDEN, DISABLED_MESSAGE)
        given = presented_key(headers)
        if given is None:
            raise ApiError(ErrorCode.UNAUTHORIZED, "API key required: X-API-Key header")
        candidate = given.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise ApiError(ErrorCode.UNAUTHORIZED, "invalid API key")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents, or None; ``X-API-Key`` first."""
    key = headers.get("x-api-key")
    if key:
        return key.strip() or None
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == _SCHEME and value.strip():
            return value.strip()
    return None
