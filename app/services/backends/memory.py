"""The one-process backend: there is nobody else to tell."""

from __future__ import annotations

from typing import Any

from app.services.backends.base import Deliver, Gap
from app.services.message import Message


class MemoryBackend:
    """Backend for a single worker; every message is already delivered locally."""

    name = "memory"

    async def start(self, deliver: Deliver, gap: Gap) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Nothing to disconnect."""

    def publish(self, channel: str, message: Message) -> None:
        """No other worker exists."""

    def subscribe(self, channel: str) -> None:
        """No subscription needed."""

    def unsubscribe(self, channel: str) -> None:
        """No subscription needed."""

    def status(self) -> dict[str, Any]:
        """Always up."""
        return {"name": self.name, "status": "up"}
