"""Each worker raises its soft open-file limit to the hard one, and says when the hard one
cannot hold FANOUT_MAX_CONNECTIONS (only the operator can raise it)."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator

import pytest

from app.logging_setup import LOGGER_NAME
from app.services.open_files import SPARE_FILES, raise_open_file_limit


class Lines(logging.Handler):
    """Collects the fanout logger's messages (it may not propagate to pytest's)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Iterator[list[str]]:
    handler = Lines()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one_without_a_warning(lines: list[str]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 512:
        pytest.skip("needs a finite hard open-file limit of at least 512")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    assert raise_open_file_limit(hard - SPARE_FILES) == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert lines == []


def test_a_hard_limit_below_max_connections_is_named_with_what_to_set(lines: list[str]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("needs a finite hard open-file limit")
    assert raise_open_file_limit(hard) == hard  # hard + SPARE_FILES would be needed
    assert len(lines) == 1
    assert f"FANOUT_MAX_CONNECTIONS={hard}" in lines[0]
    assert f"LimitNOFILE={hard + SPARE_FILES}" in lines[0]
    lines.clear()
    raise_open_file_limit(0)  # no connection limit: nothing to compare with
    assert lines == []
