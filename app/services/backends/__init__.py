"""How a published message reaches the other workers and hosts; one module per engine."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.services.backends.base import Backend, Deliver
from app.services.backends.memory import MemoryBackend

__all__ = ["Backend", "BackendConfigError", "Deliver", "create_backend"]


class BackendConfigError(ValueError):
    """FANOUT_BACKEND names an engine Fanout does not have."""


def create_backend(url: str) -> Backend:
    """The backend FANOUT_BACKEND names, by URL scheme (``memory://``)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBackend()
    raise BackendConfigError(f"FANOUT_BACKEND={url!r}: unknown scheme {scheme!r}; use memory://")
