"""Every setting Fanout reads, from FANOUT_* environment variables, in one typed object."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from app.services.origins import OriginPolicy
from app.services.rules import ChannelRules, RulesError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_GROUP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_ADMIN_KEY = re.compile(r"[\x21-\x7e]+")
"""What an HTTP header carries as one token: visible ASCII, no spaces."""
HIDDEN = "<hidden>"
SECRET_VARIABLES = frozenset(
    {"FANOUT_ADMIN_KEY", "FANOUT_API_KEYS", "FANOUT_TOKEN_HMAC_SECRET", "FANOUT_TOKEN_PUBLIC_KEY"}
)
"""Variables whose value an error line never shows (a key, or a PEM too long for one line)."""
"""How an error line shows a secret's value."""
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")
BACKEND_SCHEMES = ("memory", "local", "redis", "rediss", "unix")
NOT_SETTINGS = frozenset({"FANOUT_CHROMIUM"})
"""FANOUT_* variables that belong to the project's tooling (the browser test), not the server."""

_SOCKET_PATH_MAX = 100
"""Longest local:// socket path (bytes); app/services/backends/local.py refuses longer ones."""


class SettingsError(ValueError):
    """A FANOUT_* variable holds a value that cannot be used.

    ``str()`` is one line naming the variable, its value and what is allowed.
    """

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.variable = f"FANOUT_{name.upper()}"
        self.value = _show(value)
        self.allowed = allowed
        super().__init__(f"{self.variable}={self.value}: {allowed}")


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
    drain_seconds: float = 10.0
    """Seconds over which a drain (SIGTERM under uvicorn, or ``POST /api/drain``) closes the
    open sockets with 1012, in small batches, so clients do not all reconnect at once; 0
    closes them all at once. Under uvicorn a SIGTERM drains first and only then lets
    uvicorn shut down: the process takes up to this plus FANOUT_CLOSE_TIMEOUT to stop."""
    handshake_timeout: float = 10.0
    """Seconds a connection gets to send a complete request line and headers (the WebSocket
    handshake or any HTTP request, and the next request on a kept-alive connection);
    a connection that takes longer (slowloris) is closed and counted. uvicorn only."""
    stats_log_interval: float = 3.0
    """Seconds between 'connections: N' log lines; 0 turns them off."""
    log_level: str = ""
    """Level of the 'fanout' logger: critical, error, warning, info or debug; empty (the
    default) follows uvicorn's --log-level, so ``--log-level warning`` quiets Fanout too."""
    log_format: str = "text"
    """text: one readable line per record; json: one JSON object per line (keys time, level,
    logger, pid, message, and exc when there is a traceback), for Fanout's and uvicorn's
    loggers alike."""
    gc_freeze: bool = True
    """Move start-up objects out of the garbage collector's reach (shorter GC pauses)."""
    gc_threshold: str = "700,10,100"
    """The garbage collector's thresholds, ``gc.set_threshold``'s 1 to 3 whole numbers comma
    separated, set in each worker at start-up (``700,10,10`` is Python's own). The default
    makes full collections 10x rarer than Python's, which stop the worker for ~200 ms at
    10,000 connections and came every time the connection count grew by a quarter: about
    x1.6 connects/s in a reconnect storm for ~0.3 KB per idle connection (docs/benchmarks.md,
    "Issue 14: garbage collector thresholds")."""
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
    redis_timeout: float = 2.0
    """redis://: seconds Redis may take to answer (a connect, a write, a health-check ping on
    a quiet subscription) before the connection counts as lost: a Redis that hangs without
    closing (stopped, behind a network black hole) is reported down within about this long."""
    max_subscriptions: int = 128
    """fanout.v1: channels one connection may subscribe to; one more is refused with 429."""
    presence_max_members: int = 10_000
    """Presence: members one worker tracks per channel (its own clients). A subscriber past
    it is still subscribed but left out of presence (no join or leave, not counted), and
    the worker logs it once per channel. Bounds each worker's memory per channel to
    workers x this."""
    presence_max_clients: int = 1_000
    """Presence: clients a ``presence`` answer (and /api/presence) lists at most; past it
    the answer carries ``"truncated": true``. ``presence_stats`` counts everyone."""
    api_keys: str = dataclasses.field(default="", repr=False)
    """Keys for the HTTP API (POST /api/*), comma separated (several, for rotation); empty
    disables the API (403)."""
    config: str = ""
    """Path of the channel rules file (TOML, ``[[channels]]`` tables); empty: the built-in
    rule only (anyone subscribes, subscribers publish)."""
    history_file: str = ""
    """memory:// and local://: path of a SQLite file that keeps the history channels'
    publications across restarts (shared by the workers of one server; never removed; its
    folder is made 0o700 if missing). One file per server. Empty: history lives in the
    process (or, with several workers, in the group's folder) and a restart loses it.
    No effect with redis:// (a warning at start-up)."""
    token_hmac_secret: str = dataclasses.field(default="", repr=False)
    """Secret for HS256 tokens (connection and subscription JWTs)."""
    token_public_key: str = ""
    """Public key for RS256/ES256 tokens: the PEM text, or the path of a PEM file."""
    token_audience: str = ""
    """When set, a token's ``aud`` must name it."""
    token_issuer: str = ""
    """When set, a token's ``iss`` must be it."""
    require_auth: bool = False
    """Refuse sockets without a valid connection token (HTTP 401 at the handshake; on
    /ws, close 4500 unless the first command is a ``connect`` with a valid token)."""
    admin_key: str = dataclasses.field(default="", repr=False)
    """When set, /stats and /metrics answer only requests that present it (``X-Admin-Key: K``
    or ``Authorization: Bearer K``); empty leaves them open. Never shown: not in the
    settings' repr, not in an error line, not in a log line."""
    allowed_origins: str = ""
    """Web pages that may open a socket, by origin, comma separated: exact
    (``https://app.example.com``) or every subdomain of a domain (``https://*.example.com``);
    scheme and port exact. A browser handshake from any other origin is refused with 403.
    Empty (the default): every origin may."""
    require_origin: bool = False
    """Refuse (403) handshakes without an Origin header, i.e. every non-browser client."""
    client_publish_rate: float = 0.0
    """Messages per second one socket may send (fanout.v1 ``pub``, or any message on a raw
    socket), as a token bucket; 0 (the default): no limit."""
    client_publish_burst: int = 0
    """Messages one socket may send at once before FANOUT_CLIENT_PUBLISH_RATE applies (the
    bucket's size); 0: one second's worth (the rate rounded up, at least 1)."""
    max_connections_per_ip: int = 0
    """WebSocket connections one client address may hold on one worker; more are refused
    with HTTP 429. 0 (the default): no limit."""

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
        try:
            settings.validate()
        except SettingsError as exc:  # name the value as it was typed, not as parsed
            raw = env.get(exc.variable, "").strip()
            if exc.variable == "FANOUT_BACKEND":
                raw = _redact(raw)  # never print a password
            elif exc.variable in SECRET_VARIABLES:
                raw = HIDDEN
            if raw:
                raise SettingsError(exc.variable[len("FANOUT_") :], raw, exc.allowed) from None
            raise
        return settings

    def validate(self) -> None:
        """Refuse values that would make the server misbehave rather than fail loudly later."""
        for name in (
            "max_message_bytes",
            "outbox_max_messages",
            "outbox_max_bytes",
            "max_subscriptions",
            "local_peer_buffer_bytes",
            "redis_publish_queue",
            "presence_max_members",
            "presence_max_clients",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(name, getattr(self, name), "expected a whole number > 0")
        if self.max_connections < 0:
            raise SettingsError(
                "max_connections",
                self.max_connections,
                "expected a whole number >= 0 (0: no limit)",
            )
        for name in ("max_connections_per_ip", "client_publish_burst"):
            if getattr(self, name) < 0:
                raise SettingsError(name, getattr(self, name), "expected a whole number >= 0")
        rate = self.client_publish_rate
        if not math.isfinite(rate) or rate < 0:
            raise SettingsError(
                "client_publish_rate", rate, "expected messages per second >= 0 (0: no limit)"
            )
        try:
            OriginPolicy.from_setting(self.allowed_origins)
        except ValueError as exc:
            raise SettingsError("allowed_origins", self.allowed_origins, str(exc)) from None
        for name in (
            "close_timeout",
            "handshake_timeout",
            "local_scan_interval",
            "heartbeat_interval",
            "redis_reconnect_max",
            "redis_timeout",
        ):
            if not getattr(self, name) > 0:  # also refuses nan
                raise SettingsError(name, getattr(self, name), "expected seconds > 0")
        if not (self.drain_seconds >= 0 and math.isfinite(self.drain_seconds)):
            raise SettingsError(
                "drain_seconds",
                self.drain_seconds,
                "expected seconds >= 0 (0: close every socket at once)",
            )
        if self.stats_log_interval < 0:
            raise SettingsError(
                "stats_log_interval", self.stats_log_interval, "expected seconds >= 0 (0: off)"
            )
        if self.heartbeat_expiry <= self.heartbeat_interval:
            raise SettingsError(
                "heartbeat_expiry",
                self.heartbeat_expiry,
                f"expected seconds > FANOUT_HEARTBEAT_INTERVAL ({self.heartbeat_interval})",
            )
        if self.log_level and self.log_level.lower() not in LOG_LEVELS:
            raise SettingsError(
                "log_level",
                self.log_level,
                f"expected one of {', '.join(LOG_LEVELS)}, or empty to follow uvicorn",
            )
        if self.log_format.lower() not in LOG_FORMATS:
            raise SettingsError("log_format", self.log_format, "expected text or json")
        self.gc_thresholds()  # refuses a malformed FANOUT_GC_THRESHOLD at start-up
        self._validate_backend()
        self._validate_tokens()
        if self.history_file and urlsplit(self.backend).scheme in ("memory", "local"):
            _check_history_file(self.history_file)
        if self.admin_key and not _ADMIN_KEY.fullmatch(self.admin_key):
            raise SettingsError(
                "admin_key", HIDDEN, "expected visible ASCII characters (no spaces), or empty"
            )
        if self.local_group and not _GROUP_NAME.fullmatch(self.local_group):
            raise SettingsError(
                "local_group",
                self.local_group,
                "expected 1-64 of [A-Za-z0-9_.-], not starting with a dot",
            )
        if self.local_dir and urlsplit(self.backend).scheme == "local":
            _check_local_dir(self.local_dir, self.local_group)

    def gc_thresholds(self) -> tuple[int, ...] | None:
        """FANOUT_GC_THRESHOLD as ``gc.set_threshold``'s arguments; None where it is empty."""
        if not self.gc_threshold.strip():
            return None
        parts = [p.strip().replace("_", "") for p in self.gc_threshold.split(",")]
        expected = "expected 1 to 3 whole numbers >= 0, comma separated (e.g. 50000,20,10)"
        if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            raise SettingsError("gc_threshold", self.gc_threshold, expected)
        return tuple(int(p) for p in parts)

    def _validate_backend(self) -> None:
        scheme = urlsplit(self.backend).scheme
        if scheme not in BACKEND_SCHEMES:
            raise SettingsError(
                "backend",
                _redact(self.backend),
                f"unknown scheme {scheme!r}; expected memory://, local:// or redis://host:port/db",
            )
        if scheme in ("redis", "rediss", "unix") and importlib.util.find_spec("redis") is None:
            raise SettingsError(
                "backend", _redact(self.backend), "needs redis-py: pip install 'fanout[redis]'"
            )

    def _validate_tokens(self) -> None:
        if self.token_hmac_secret and self.token_public_key:
            raise SettingsError(
                "token_public_key", HIDDEN, "set FANOUT_TOKEN_HMAC_SECRET or this, not both"
            )
        key = self.token_public_key
        if key and "-----BEGIN" not in key:
            path = Path(key)
            if not path.is_file():
                raise SettingsError("token_public_key", key, "expected PEM text or a PEM file")
            key = path.read_text()
        if key:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            try:
                load_pem_public_key(key.encode())
            except ValueError:
                raise SettingsError(
                    "token_public_key", HIDDEN, "not a PEM public key (RSA or EC)"
                ) from None
        if self.require_auth and not (self.token_hmac_secret or self.token_public_key):
            raise SettingsError(
                "require_auth",
                "true",
                "needs FANOUT_TOKEN_HMAC_SECRET or FANOUT_TOKEN_PUBLIC_KEY to check tokens",
            )

    @property
    def log_level_name(self) -> str | None:
        """FANOUT_LOG_LEVEL as a logging level name, or None to follow uvicorn."""
        return self.log_level.upper() or None


def load_channel_rules(settings: Settings) -> ChannelRules:
    """The channel rules of FANOUT_CONFIG (the built-in rule alone when it is unset).

    A file that cannot be read or used is a SettingsError naming the file, the line where
    TOML reports one, and the reason.
    """
    if not settings.config:
        return ChannelRules()
    try:
        text = Path(settings.config).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError("config", settings.config, f"cannot read it: {reason}") from None
    try:
        return ChannelRules.from_toml(text)
    except RulesError as exc:
        raise SettingsError("config", settings.config, str(exc)) from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per FANOUT_* variable Fanout does not read, with the closest known name."""
    env = os.environ if environ is None else environ
    known = [f"FANOUT_{field.name.upper()}" for field in fields(Settings)]
    warnings = []
    for name in sorted(env):
        if not name.startswith("FANOUT_") or name in known or name in NOT_SETTINGS:
            continue
        # Compared without the prefix every name shares, which would make any two look alike.
        suffixes = [k.removeprefix("FANOUT_") for k in known]
        close = difflib.get_close_matches(name.removeprefix("FANOUT_"), suffixes, n=1, cutoff=0.6)
        hint = (
            f"did you mean FANOUT_{close[0]}?" if close else "the settings are listed in README.md"
        )
        warnings.append(f"{name} is not a Fanout setting and is ignored; {hint}")
    return warnings


def ignored_settings(settings: Settings) -> list[str]:
    """One warning per setting that is valid but has no effect with the others."""
    if settings.history_file and urlsplit(settings.backend).scheme not in ("memory", "local"):
        return [
            "FANOUT_HISTORY_FILE has no effect with a Redis backend (history is kept in"
            " Redis) and is ignored"
        ]
    return []


def _check_history_file(file: str) -> None:
    """FANOUT_HISTORY_FILE must name a file (or one that can be made), not a folder.

    What only opening it can tell (permissions, a file that is not a database) is left to
    the store: its history calls answer 503 and it logs why.
    """
    path = Path(file)
    try:
        if path.is_dir():
            raise SettingsError("history_file", file, "expected a file path, but it is a directory")
        existing = path.parent
        while not existing.exists():
            existing = existing.parent
    except OSError:  # a folder this user may not look into: the store will say why
        return
    if not existing.is_dir():
        raise SettingsError(
            "history_file", file, f"expected a file path, but {existing} is not a directory"
        )


def _check_local_dir(directory: str, group: str) -> None:
    """FANOUT_LOCAL_DIR must be a folder this user can create sockets in (or create)."""
    path = Path(directory)
    existing = path
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: creating the folder would fail
            raise SettingsError("local_dir", directory, f"{existing} is a broken symlink")
        existing = existing.parent
    if not existing.is_dir():
        raise SettingsError(
            "local_dir", directory, f"expected a folder, but {existing} is not a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "exists but is" if existing == path else f"would be created in {existing}, which is"
        raise SettingsError(
            "local_dir", directory, f"expected a writable folder; it {what} not writable"
        )
    # local:// appends /<group>/<pid>.sock; the default group is sup-<pid>, pids have <= 7 digits.
    longest = _SOCKET_PATH_MAX - len(f"/{group or 'sup-4194304'}/4194304.sock")
    if len(os.fsencode(path)) > longest:
        raise SettingsError(
            "local_dir",
            directory,
            f"expected a path of at most {longest} bytes (Unix socket paths under it are"
            f" limited to {_SOCKET_PATH_MAX})",
        )


def _parse(name: str, kind: object, raw: str) -> object:
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
    except ValueError:
        expected = {
            "int": "expected a whole number",
            "float": "expected a number (seconds)",
            "rate": "expected a number (per second)",
            "bool": "expected true/false (also 1/0, yes/no, on/off)",
        }
        kind_name = getattr(kind, "__name__", str(kind))
        if name.endswith("_rate"):
            kind_name = "rate"
        raise SettingsError(name, raw, expected[kind_name]) from None
    return raw


def _show(value: object) -> str:
    """A value as the user would have typed it, quoted: '0', 'true', 'local://'."""
    if isinstance(value, bool):
        value = str(value).lower()
    return repr(str(value))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
