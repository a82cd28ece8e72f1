"""Fanout's logging: the 'fanout' logger, one line format for Fanout's and uvicorn's lines.

- Level: FANOUT_LOG_LEVEL when set, else uvicorn's ``--log-level`` (info by default), so
  ``--log-level warning`` quiets Fanout's info lines too.
- Format: FANOUT_LOG_FORMAT=text (default) or json, applied to Fanout's logger and to
  uvicorn's handlers (uvicorn, uvicorn.error, uvicorn.access), so one worker's output has
  one format. Every line names the worker that wrote it (its pid). A user's own
  ``--log-config`` formatters are kept in text mode; json replaces them (that was asked for).
- uvicorn's lines for each accepted WebSocket (``"WebSocket /path" [accepted]``, and the
  websockets library's "connection open" / "connection closed") are dropped: Fanout writes
  one line when a client connects and one when it leaves.
- A client's invalid UTF-8 is one warning line, not a traceback.

Nothing here adds request details (query strings, headers) to a line: what a line says is
what its logger call says.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.config import Settings

LOGGER_NAME = "fanout"

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
"""uvicorn's loggers; their handlers get Fanout's formatter."""

_CLIENT_ERRORS = ("Invalid UTF-8 sequence received from client",)
"""uvicorn.error messages that report a client's mistake but are logged with a traceback."""

CONNECTION_LINES = frozenset(
    {
        '%s - "WebSocket %s" [accepted]',  # uvicorn 0.54, all three WebSocket protocols
        "connection open",  # websockets (sansio and legacy), on uvicorn.error
        "connection closed",  # websockets (sansio and legacy), on uvicorn.error
    }
)
"""uvicorn.error messages (unformatted) written for every accepted WebSocket connection."""

_UVICORN_FORMATS = frozenset(
    {
        "%(levelprefix)s %(message)s",
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
    }
)
"""The formats of uvicorn's default LOGGING_CONFIG: those handlers are uvicorn's, not a user's."""

_SHORT_NAMES = {"uvicorn.error": "uvicorn"}
"""Text lines call uvicorn's general logger 'uvicorn': most of its lines are not errors."""

_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c != 9} | {10: "\\n", 13: "\\r"}
"""Control characters escaped in text lines, so one record is always one line."""


class ClientErrorFilter(logging.Filter):
    """Turns uvicorn's traceback for a client's invalid UTF-8 into one warning line.

    uvicorn's websockets-sansio protocol logs this with ``logger.exception`` at ERROR, so
    any client could flood the log with tracebacks; the socket is still closed with 1007
    and Fanout logs and counts that close itself.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(_CLIENT_ERRORS):
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
            record.exc_info = None
            record.exc_text = None
        return True


class SecretFilter(logging.Filter):
    """Replaces the value of a ``token=`` query parameter with ``[redacted]``.

    uvicorn's access and refusal lines carry the request's query string, and a socket's
    token may come as ``?token=JWT``: no token may reach a log line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg = _TOKEN_PARAM.sub(r"\1[redacted]", message)
            record.args = None
        return True


_TOKEN_PARAM = re.compile(r"([?&]token=)[^&\s\"']*", re.IGNORECASE)


class ConnectionLineFilter(logging.Filter):
    """Drops uvicorn's per-connection lines for WebSockets (see :data:`CONNECTION_LINES`).

    Refusals (``"WebSocket /path" 503``, "connection rejected") are kept: uvicorn's own
    refusal of a malformed handshake is only logged there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg in CONNECTION_LINES)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>[<pid>]: <message>``, one line per record (plus a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        name = _SHORT_NAMES.get(record.name, record.name)
        message = record.message.translate(_CONTROL)
        when = self.formatTime(record)
        line = f"{when} {record.levelname:<7} {name}[{record.process}]: {message}"
        exc = _exception_text(self, record)
        return f"{line}\n{exc}" if exc else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line with stable keys: time, level, logger, pid, message, exc.

    ``time`` is ISO 8601 in UTC with milliseconds; ``exc`` (the traceback, as text) is
    present only when the record has one.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        exc = _exception_text(self, record)
        if exc:
            entry["exc"] = exc
        return json.dumps(entry, default=str)


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter FANOUT_LOG_FORMAT names: ``json`` or (anything else) text."""
    return JsonFormatter() if log_format.lower() == "json" else TextFormatter()


def format_line(level: int, message: str, *, json_lines: bool = False) -> str:
    """``message`` as the 'fanout' logger would write it, for use before logging is set up."""
    record = logging.LogRecord(LOGGER_NAME, level, __file__, 0, message, None, None)
    return formatter_for("json" if json_lines else "text").format(record)


def uvicorn_level() -> int:
    """uvicorn's log level (``--log-level``), or INFO where uvicorn configured no logging."""
    uvicorn = logging.getLogger("uvicorn")
    error = logging.getLogger("uvicorn.error")
    if not uvicorn.handlers and error.level == logging.NOTSET:
        return logging.INFO  # another server (hypercorn) or uvicorn not set up yet
    return error.getEffectiveLevel()


def configure_logging(settings: Settings) -> None:
    """Set up the 'fanout' logger and uvicorn's: level, format, filters (idempotent).

    uvicorn configures only its own loggers, so without this Fanout's info lines would
    go nowhere.
    """
    formatter = formatter_for(settings.log_format)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(settings.log_level_name or uvicorn_level())
    handler = next((h for h in logger.handlers if isinstance(h, _FanoutHandler)), None)
    if handler is None:
        handler = _FanoutHandler(sys.stderr)
        logger.addHandler(handler)
    handler.setFormatter(formatter)
    logger.propagate = False

    uvicorn_error = logging.getLogger("uvicorn.error")
    for kind in (ClientErrorFilter, ConnectionLineFilter):
        if not any(isinstance(f, kind) for f in uvicorn_error.filters):
            uvicorn_error.addFilter(kind())
    for name in (LOGGER_NAME, "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        if not any(isinstance(f, SecretFilter) for f in named.filters):
            named.addFilter(SecretFilter())

    json_lines = settings.log_format.lower() == "json"
    for name in UVICORN_LOGGERS:
        for uvicorn_handler in logging.getLogger(name).handlers:
            if json_lines or _is_uvicorn_default(uvicorn_handler.formatter):
                uvicorn_handler.setFormatter(formatter)


def _is_uvicorn_default(formatter: logging.Formatter | None) -> bool:
    """Whether ``formatter`` is one of uvicorn's defaults (not from a user's --log-config)."""
    if formatter is None:
        return False
    if isinstance(formatter, TextFormatter | JsonFormatter):
        return True  # set by an earlier call: follow this call's FANOUT_LOG_FORMAT
    module = type(formatter).__module__
    return module == "uvicorn.logging" and getattr(formatter, "_fmt", None) in _UVICORN_FORMATS


class _FanoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler Fanout installed, so a second app instance doesn't add another."""
