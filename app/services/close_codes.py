"""WebSocket close codes Fanout sends, and what each tells a client to do."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Close codes used by Fanout (RFC 6455 section 7.4 plus private codes 4000-4999)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """The application is stopping (lifespan shutdown closed the socket)."""
    PROTOCOL_ERROR = 1002
    """A malformed frame (unmasked, reserved bits, bad opcode; sent by the protocol layer)."""
    NO_STATUS = 1005
    """Reported when a client's connection vanished without a close frame."""
    ABNORMAL = 1006
    INVALID_UTF8 = 1007
    """A text frame was not valid UTF-8 (sent by the WebSocket protocol layer)."""
    POLICY_VIOLATION = 1008
    """A handshake refused where the server cannot answer with an HTTP status."""
    MESSAGE_TOO_BIG = 1009
    """A message exceeded FANOUT_MAX_MESSAGE_BYTES."""
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    """The server is shutting down or restarting (SIGTERM, Ctrl-C); reconnect."""
    TRY_AGAIN_LATER = 1013
    """The worker is at FANOUT_MAX_CONNECTIONS and the server cannot answer with HTTP 503."""
    TOKEN_EXPIRED = 4001
    """The connection's token expired and was not refreshed: reconnect with a new one."""
    SLOW_CONSUMER = 4008
    """The client did not read fast enough: its outbox overflowed. Reconnect."""
    RATE_LIMITED = 4029
    """The client kept sending over FANOUT_CLIENT_PUBLISH_RATE (more than the burst refused
    within one refill of the bucket). Reconnect with backoff, and send slower."""
    INVALID_TOKEN = 4500
    """An invalid token, or authentication required and not given. Do not reconnect
    with the same token."""
    BAD_FRAME = 4501
    """fanout.v1: a frame that cannot be read at all (not JSON, not an object, a binary
    frame that is not a publish). Do not reconnect with the same client."""
    FORBIDDEN = 4503
    """Not allowed: a handshake refused for its origin where the server cannot answer with
    HTTP 403, or a raw socket that published where its channel's rules forbid it."""
    CONNECTION_LIMIT = 4504
    """A handshake over FANOUT_MAX_CONNECTIONS_PER_IP, where the server cannot answer with
    HTTP 429."""


PROTOCOL_ERRORS = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.INVALID_UTF8,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.BAD_FRAME,
    }
)
"""Codes that mean the client broke the protocol; logged as one warning line."""
