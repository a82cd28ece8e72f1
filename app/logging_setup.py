"""The 'fanout' logger, and one correction to uvicorn's: a client's error is one line."""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "fanout"

_CLIENT_ERRORS = ("Invalid UTF-8 sequence received from client",)
"""uvicorn.error messages that report a client's mistake but are logged with a traceback."""


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


def configure_logging(level: str) -> None:
    """Give the 'fanout' logger a stderr handler (once) and the configured level.

    uvicorn configures only its own loggers, so without this Fanout's info lines would
    go nowhere.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level.upper())
    if not any(isinstance(h, _FanoutHandler) for h in logger.handlers):
        handler = _FanoutHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ClientErrorFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(ClientErrorFilter())


class _FanoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler Fanout installed, so a second app instance doesn't add another."""
