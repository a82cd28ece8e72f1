"""The interface every backend implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from app.services.message import Message

Deliver = Callable[[str, Message], None]
"""Called by a backend with each message another worker published: (channel, message)."""


class Backend(Protocol):
    """Carries messages between workers; the local worker's delivery never goes through it.

    ``publish`` must not wait: a backend buffers (bounded) and sends on its own task, so a
    slow or absent peer can never stall a client's receive loop.
    """

    name: str

    async def start(self, deliver: Deliver) -> None:
        """Connect, and from now on call ``deliver`` for every message from elsewhere."""

    async def stop(self) -> None:
        """Disconnect and cancel every task the backend owns."""

    def publish(self, channel: str, message: Message) -> None:
        """Send ``message`` to every other worker subscribed to ``channel``."""

    def subscribe(self, channel: str) -> None:
        """This worker has its first local subscriber on ``channel``."""

    def unsubscribe(self, channel: str) -> None:
        """This worker's last local subscriber on ``channel`` has gone."""

    def status(self) -> dict[str, Any]:
        """A JSON-able description of the backend's health for /stats and /healthz."""
