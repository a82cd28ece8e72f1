"""The interface every backend implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from app.services.message import Message

Deliver = Callable[[str, Message], None]
"""Called by a backend with each message another worker published: (channel, message)."""


class Gap(Protocol):
    """Called by a backend when messages from elsewhere may have been lost: ``reason``, and
    ``channel`` when only that channel's subscribers are concerned (None: every subscriber)."""

    def __call__(self, reason: str, channel: str | None = None, /) -> None: ...


CONTROL_CHANNEL = "fanout:control"
"""The channel workers share their heartbeats on. Client channel names cannot contain ':',
so no client can subscribe or publish to it; backends carry it like any other channel and
subscribe to it whether or not a client is there."""


class Backend(Protocol):
    """Carries messages between workers; the local worker's delivery never goes through it.

    ``publish`` must not wait: a backend buffers (bounded) and sends on its own task or
    transport, so a slow or absent peer can never stall a client's receive loop. A backend
    never hands a worker its own messages back: the publishing worker has already
    delivered them to its own clients.
    """

    name: str

    async def start(self, deliver: Deliver, gap: Gap) -> None:
        """Connect, and from now on call ``deliver`` for every message from elsewhere and
        ``gap`` whenever some of them may have been lost (a dropped link, a reconnect)."""

    async def stop(self) -> None:
        """Disconnect and cancel every task the backend owns."""

    def publish(self, channel: str, message: Message) -> None:
        """Send ``message`` to every other worker subscribed to ``channel``."""

    def subscribe(self, channel: str) -> None:
        """This worker has its first local subscriber on ``channel``."""

    def unsubscribe(self, channel: str) -> None:
        """This worker's last local subscriber on ``channel`` has gone."""

    def status(self) -> dict[str, Any]:
        """A JSON-able description of the backend's health for /stats and /healthz.

        Always has ``name`` and ``status`` (``"up"`` or ``"down"``).
        """
