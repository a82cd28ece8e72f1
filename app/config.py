"""Every setting Fanout reads, from FANOUT_* environment variables, in one typed object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_GROUP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


class SettingsError(ValueError):
    """A FANOUT_* variable holds a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration; each field is read from ``FANOUT_<FIELD NAME IN CAPITALS>``."""

    backend: str = "local://"
    """Where messages go beyond this process: memory:// (one process), local:// (the workers
    of one server on one host, no external service), redis://host:port/db (several hosts)."""
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
    direct_writes: bool = True
    """Write prepared frames straight to uvicorn's transport where it is safe (the fast
    path); false sends every message through plain ASGI."""
    local_dir: str = ""
    """local://: folder for the workers' Unix sockets; empty means $XDG_RUNTIME_DIR/fanout,
    or /tmp/fanout-<uid> where that is unset."""
    local_group: str = ""
    """local://: name of the group of workers that join each other; empty means the workers
    of one uvicorn supervisor (a single-process server is a group of one)."""
    local_peer_buffer_bytes: int = 8_388_608
    """local://: bytes that may wait for one sibling worker before its link is dropped and
    reconnected (the slow-peer policy)."""
    local_scan_interval: float = 0.5
    """local://: seconds between scans of the socket folder for new or vanished siblings."""
    heartbeat_interval: float = 1.0
    """Seconds between the figures each worker shares with the others for /stats."""
    heartbeat_expiry: float = 3.5
    """Seconds after its last heartbeat that a silent worker is dropped from /stats."""
    redis_publish_queue: int = 10_000
    """redis://: messages that may wait to be published; beyond it they are dropped (counted)."""
    redis_reconnect_max: float = 2.0
    """redis://: longest pause, in seconds, between attempts to reconnect to Redis."""
    max_subscriptions: int = 128
    """fanout.v1: channels one connection may subscribe to; one more is refused with 429."""
    api_keys: str = ""
    """Keys for the HTTP API (POST /api/*), comma separated (several, for rotation); empty
    disables the API (403)."""

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
        positive = (
            "max_message_bytes",
            "outbox_max_messages",
            "outbox_max_bytes",
            "max_subscriptions",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"FANOUT_{name.upper()} must be > 0")
        if self.max_connections < 0:
            raise SettingsError("FANOUT_MAX_CONNECTIONS must be >= 0 (0 means no limit)")
        if self.close_timeout <= 0:
            raise SettingsError("FANOUT_CLOSE_TIMEOUT must be > 0")
        if self.stats_log_interval < 0:
            raise SettingsError("FANOUT_STATS_LOG_INTERVAL must be >= 0")
        for name in (
            "local_peer_buffer_bytes",
            "local_scan_interval",
            "heartbeat_interval",
            "redis_publish_queue",
            "redis_reconnect_max",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"FANOUT_{name.upper()} must be > 0")
        if self.heartbeat_expiry <= self.heartbeat_interval:
            raise SettingsError("FANOUT_HEARTBEAT_EXPIRY must be > FANOUT_HEARTBEAT_INTERVAL")
        if self.local_group and not _GROUP_NAME.fullmatch(self.local_group):
            raise SettingsError(
                "FANOUT_LOCAL_GROUP must be 1-64 of [A-Za-z0-9_.-], not starting with a dot"
            )


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
