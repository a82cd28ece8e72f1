"""Settings: parsed from FANOUT_* variables, validated in one place."""

from __future__ import annotations

import pytest

from app.config import Settings, SettingsError


def test_settings_from_env_parses_and_validates() -> None:
    s = Settings.from_env({"FANOUT_MAX_CONNECTIONS": "5", "FANOUT_GC_FREEZE": "off"})
    assert s.max_connections == 5
    assert s.gc_freeze is False
    assert Settings.from_env({}).max_message_bytes == 1_048_576
    with pytest.raises(SettingsError, match="FANOUT_OUTBOX_MAX_BYTES"):
        Settings.from_env({"FANOUT_OUTBOX_MAX_BYTES": "0"})
    with pytest.raises(SettingsError, match="FANOUT_CLOSE_TIMEOUT"):
        Settings.from_env({"FANOUT_CLOSE_TIMEOUT": "soon"})


def test_redis_timeout_is_seconds_above_zero() -> None:
    assert Settings.from_env({}).redis_timeout == 2.0
    assert Settings.from_env({"FANOUT_REDIS_TIMEOUT": "0.5"}).redis_timeout == 0.5
    for bad in ("0", "-1", "nan"):
        with pytest.raises(SettingsError, match=r"FANOUT_REDIS_TIMEOUT.*expected seconds > 0"):
            Settings.from_env({"FANOUT_REDIS_TIMEOUT": bad})
