"""The two ends of a local:// link: one Unix socket carrying frames one way, sibling to sibling.

The sending end has no queue of its own: frames wait in its transport's buffer, whose bound
(FANOUT_LOCAL_PEER_BUFFER_BYTES) the publisher checks after each write. The receiving end
decodes frames and hands them on a batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from app.logging_setup import LOGGER_NAME
from app.services import framing

logger = logging.getLogger(LOGGER_NAME)

BATCH = 32
"""Frames delivered before the reader lets the client writers run (as the receive loop does)."""

MAX_FRAME_BYTES = 64 * 1024 * 1024
"""A frame announcing more than this is garbage: the link is dropped."""

OnFrame = Callable[[framing.Frame, "InboundLink"], None]
"""Called with each frame a sibling sent, and the link it came on."""


class OutboundLink(asyncio.Protocol):
    """This worker's sending end of a link to one sibling."""

    def __init__(self, pid: int, buffer_bytes: int, lost: Callable[[OutboundLink], None]) -> None:
        self.pid = pid
        self._buffer_bytes = buffer_bytes
        self._lost = lost
        self.transport: asyncio.WriteTransport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.WriteTransport, transport)
        # Writing never waits on pause_writing: the byte bound in publish() is the policy.
        self.transport.set_write_buffer_limits(high=self._buffer_bytes)

    def data_received(self, data: bytes) -> None:
        """Links are one-way; a sibling never writes back."""

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(self)


class InboundLink(asyncio.Protocol):
    """The receiving end of a sibling's link: frames in, handed to ``on_frame``.

    Frames are delivered BATCH at a time, pausing reading in between, so a burst from a
    sibling lets the client writers run as a burst from a client does.
    """

    def __init__(
        self,
        on_frame: OnFrame,
        opened: Callable[[InboundLink], None],
        lost: Callable[[InboundLink], None],
    ) -> None:
        self.pid: int | None = None
        """The sibling's pid, once its HELLO frame has said it."""
        self.transport: asyncio.Transport | None = None
        self._on_frame = on_frame
        self._opened = opened
        self._lost = lost
        self._decoder = framing.FrameDecoder(MAX_FRAME_BYTES)
        self._draining = False
        self._paused = False
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._opened(self)

    def data_received(self, data: bytes) -> None:
        self._decoder.feed(data)
        if not self._draining:
            self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._lost(self)

    def close(self) -> None:
        """Stop receiving from this sibling."""
        if self.transport is not None:
            self.transport.close()

    def _drain(self) -> None:
        decoder = self._decoder
        on_frame = self._on_frame
        try:
            for _ in range(BATCH):
                frame = decoder.next()
                if frame is None:
                    self._draining = False
                    if self._paused and not self._closed:
                        self._paused = False
                        assert self.transport is not None
                        self.transport.resume_reading()
                    return
                on_frame(frame, self)
        except (framing.FrameError, UnicodeDecodeError, ValueError) as exc:
            logger.error(
                "local backend: bad frame from sibling %s: %s; dropping link", self.pid, exc
            )
            self._draining = False
            if self.transport is not None:
                self.transport.abort()
            return
        # More may be buffered: let the writers woken by this batch run first.
        self._draining = True
        if not self._paused and not self._closed:
            self._paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._drain)
