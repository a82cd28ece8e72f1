"""Every setting Fanout reads, from FANOUT_* environment variables, in one typed object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A FANOUT_* variable holds a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration; each field is read from ``FANOUT_<FIELD NAME IN CAPITALS>``."""

    backend: str = "memory://"
    """Where messages go beyond this process: memory:// (one process)."""
    max_message_bytes: int = 1_048_576
    """Largest message a client may send; larger ones close the socket with 1009."""
    outbox_max_messages: int = 1024
    """Messages that may wait for one client before it counts as a slow consumer."""
    outbox_max_bytes: int = 4_194_304
    """Bytes that may wait for one client before it counts as a slow consumer."""
    max_connections: int = 10_000
    """WebSocket connections one worker accepts; more are refused with HTTP 503."""
    close_timeout: float = 3.0
    """Seconds a closing client gets to take its close frame before the socket is aborted."""
    stats_log_interval: float = 3.0
    """Seconds between 'connections: N' log lines; 0 turns them off."""
    log_level: str = "info"
    """Level of the 'fanout' logger."""
    gc_freeze: bool = True
    """Move start-up objects out of the garbage collector's reach (shorter GC pauses)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = env.get(f"FANOUT_{field.name.upper()}")
            if raw is None or raw.strip() == "":
                continue
            values[field.name] = _parse(field.name, field.type, raw.strip())
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse values that would make the server misbehave rather than fail loudly later."""
        positive = ("max_message_bytes", "outbox_max_messages", "outbox_max_bytes")
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"FANOUT_{name.upper()} must be > 0")
        if self.max_connections < 0:
            raise SettingsError("FANOUT_MAX_CONNECTIONS must be >= 0 (0 means no limit)")
        if self.close_timeout <= 0:
            raise SettingsError("FANOUT_CLOSE_TIMEOUT must be > 0")
        if self.stats_log_interval < 0:
            raise SettingsError("FANOUT_STATS_LOG_INTERVAL must be >= 0")


def _parse(name: str, kind: object, raw: str) -> object:
    env_name = f"FANOUT_{name.upper()}"
    try:
        if kind in (int, "int"):
            return int(raw.replace("_", ""))
        if kind in (float, "float"):
            return float(raw)
        if kind in (bool, "bool"):
            lowered = raw.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(raw)
    except ValueError as exc:
        raise SettingsError(f"{env_name}={raw!r} is not a valid {kind}") from exc
    return raw
