"""DirectWriter: prepared frames straight to the transport of uvicorn's websockets-sansio."""

from __future__ import annotations

import asyncio
from typing import Any

from app.server.trims import is_sansio

DIRECT_ATTRIBUTES = ("transport", "writable", "close_sent", "conn", "handshake_complete")
"""What the direct path reads of uvicorn's protocol object; all must be there to use it."""


class DirectWriter:
    """Writes prepared frames to a uvicorn websockets-sansio connection's transport.

    Safe because that protocol writes every frame it produces (pings, pongs, close) with
    one ``transport.write`` and never fragments outgoing messages, so whole frames from
    here interleave with its own at frame boundaries. Frames are sent without
    compression: RFC 7692 lets a sender leave any message uncompressed (RSV1 clear),
    also on connections that negotiated permessage-deflate, and skipping the deflate
    context leaves the protocol's own compressor state untouched.
    """

    __slots__ = ("_protocol", "_transport", "_writable")

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._transport: asyncio.WriteTransport = protocol.transport
        self._writable: asyncio.Event = protocol.writable

    def can_write(self) -> bool:
        """True while the socket is open and its buffer is under the high-water mark."""
        return (
            self._writable.is_set()
            and not self._protocol.close_sent
            and not self._transport.is_closing()
        )

    def is_open(self) -> bool:
        """True until a close frame was sent or the transport started closing."""
        return not self._protocol.close_sent and not self._transport.is_closing()

    def write(self, data: bytes) -> None:
        """Queue ``data`` on the transport; never waits."""
        self._transport.write(data)

    async def wait_writable(self) -> None:
        """Wait until the transport's buffer drained below its low-water mark."""
        await self._writable.wait()


def direct_writer_for(protocol: Any) -> DirectWriter | None:
    """A :class:`DirectWriter` for uvicorn's websockets-sansio ``protocol``, else None."""
    if not is_sansio(protocol):
        return None
    # Fanout's subclass sets them all in its constructor: no need to look for each.
    if not getattr(type(protocol), "has_direct_attributes", False) and not all(
        hasattr(protocol, name) for name in DIRECT_ATTRIBUTES
    ):
        return None
    if not isinstance(protocol.writable, asyncio.Event):
        return None
    return DirectWriter(protocol)
