"""The one way an HTTP API request fails: a status that is also the error's code."""

from __future__ import annotations

from typing import Final

import msgspec

from app.services.protocol.errors import ErrorCode

__all__ = ["ApiError", "ErrorCode", "encode_error"]


class ApiError(Exception):
    """Refuse the request with HTTP status ``code`` and body
    ``{"error":{"code":code,"message":message}}`` (PROTOCOL.md section 3).

    ``message`` goes to the client and to the log line: it never holds key material.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Error(msgspec.Struct, frozen=True, gc=False):
    code: int
    message: str


class _ErrorBody(msgspec.Struct, frozen=True, gc=False):
    error: _Error


_encode: Final = msgspec.json.Encoder().encode


def encode_error(code: int, message: str) -> bytes:
    """``{"error":{"code":C,"message":M}}``, also the shape of a failed broadcast entry."""
    return _encode(_ErrorBody(_Error(code, message)))
