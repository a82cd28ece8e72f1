"""The SDK's exceptions: one base class, a typed error per way a call can fail."""

from __future__ import annotations


class FanoutError(Exception):
    """Base class of every error this package raises."""


class CommandError(FanoutError):
    """The server answered a ``fanout.v1`` command with an error.

    ``code`` means what the HTTP status of the same number means: 400 bad command, 401 no
    or expired token, 403 not allowed, 404 unknown (or not available on this server),
    409 already subscribed, 413 too large, 429 rate or subscription limit, 503 backend
    down.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ApiError(FanoutError):
    """The HTTP API refused a request: ``code`` is the HTTP status (and the body's code),
    ``message`` the server's explanation. A transport failure (no answer, timeout) is
    raised as an ``ApiError`` too, with ``code`` 0 and the cause chained."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class DisconnectedError(FanoutError):
    """The connection dropped before the server answered this command.

    The command may or may not have reached the server: a publish is not retried by the
    client, since that could publish twice.
    """

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"disconnected ({code}): {reason}" if code else "disconnected")
        self.code = code
        self.reason = reason


class ClientClosed(FanoutError):
    """The client is closed: by :meth:`~fanout_sdk.client.Client.close`, or for good by the
    server (``code`` 4500-4999, or 4001 with no way to get a new token)."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"client closed ({code}): {reason}" if code else "client closed")
        self.code = code
        self.reason = reason


class CommandTimeout(FanoutError, TimeoutError):
    """No reply within the command timeout."""


class SubscriptionEnded(FanoutError):
    """A subscription ended without being asked to: the server ended it (an ``unsub``
    event) or refused it when the client subscribed again after a reconnect."""

    def __init__(self, channel: str, code: int, reason: str) -> None:
        super().__init__(f"subscription to {channel} ended ({code}): {reason}")
        self.channel = channel
        self.code = code
        self.reason = reason
