"""How a published message reaches the other workers and hosts; one module per engine."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.config import Settings
from app.services.backends.base import Backend, Deliver, Gap
from app.services.backends.local import LocalBackend
from app.services.backends.memory import MemoryBackend

__all__ = ["Backend", "BackendConfigError", "Deliver", "Gap", "create_backend"]


class BackendConfigError(ValueError):
    """FANOUT_BACKEND names an engine Fanout does not have, or cannot use."""


def create_backend(settings: Settings) -> Backend:
    """The backend FANOUT_BACKEND names, by URL scheme; connects nothing until started."""
    url = settings.backend
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBackend()
    if scheme == "local":
        return LocalBackend(
            directory=settings.local_dir,
            group=settings.local_group,
            peer_buffer_bytes=settings.local_peer_buffer_bytes,
            scan_interval=settings.local_scan_interval,
        )
    if scheme in ("redis", "rediss", "unix"):
        try:
            from app.services.backends.redis import RedisBackend
        except ImportError as exc:  # redis-py is the optional extra fanout[redis]
            raise BackendConfigError(
                f"FANOUT_BACKEND={_redact(url)!r} needs redis-py: pip install 'fanout[redis]'"
            ) from exc
        return RedisBackend(
            url,
            publish_queue=settings.redis_publish_queue,
            reconnect_max=settings.redis_reconnect_max,
            timeout=settings.redis_timeout,
        )
    raise BackendConfigError(
        f"FANOUT_BACKEND={_redact(url)!r}: unknown scheme {scheme!r}; "
        "use memory://, local:// or redis://host:port/db"
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
