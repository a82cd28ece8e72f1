"""The 'fanout' logger: one handler, one line per event, level from settings."""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "fanout"


def configure_logging(level: str) -> None:
    """Give the 'fanout' logger a stderr handler (once) and the configured level.

    uvicorn configures only its own loggers, so without this Fanout's info lines would
    go nowhere.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level.upper())
    if not any(getattr(h, "_fanout", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        handler._fanout = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
