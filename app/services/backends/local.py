"""The workers of one server on one host, joined by Unix sockets: no configuration, no broker.

Every worker of a group listens on ``<dir>/<group>/<pid>.sock`` and opens one link to each
sibling's socket; a link carries frames one way (see :mod:`app.services.framing`), so a
group of N workers has N*(N-1) links and a message published on one worker is written,
framed once, to each of the others.

The group is the set of workers of one uvicorn supervisor (``sup-<ppid>``): uvicorn's
``--workers`` children are spawned by multiprocessing, which a single-process server is
not, so two single servers started from one shell never join each other. FANOUT_LOCAL_GROUP
names a group explicitly (to join servers on purpose).

Siblings are found by scanning the folder: a socket nobody answers on whose pid is gone is
stale and removed; so is the folder of a supervisor that is gone. Writing to a sibling never
waits: bytes queue in the link's transport, and a link whose queue passes
FANOUT_LOCAL_PEER_BUFFER_BYTES is aborted (counted, logged) and reopened by the next scan,
whose first frame tells the sibling that it missed messages.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from app.logging_setup import LOGGER_NAME
from app.services import framing
from app.services.backends.base import Deliver, Gap
from app.services.backends.local_folder import GroupFolder, default_directory, default_group
from app.services.backends.local_links import InboundLink, OutboundLink
from app.services.backends.local_siblings import Siblings
from app.services.message import Message

logger = logging.getLogger(LOGGER_NAME)


class LocalBackend:
    """Backend for the workers of one host; see the module documentation.

    The roles live beside it: :class:`~app.services.backends.local_folder.GroupFolder` (the
    group's folder: finding siblings, removing stale sockets and folders),
    :class:`~app.services.backends.local_siblings.Siblings` (the links both ways, the scan,
    the overflow policy) and :mod:`~app.services.backends.local_links` (one link's two ends).
    This class implements the Backend protocol over them.
    """

    name = "local"

    def __init__(
        self,
        *,
        directory: str = "",
        group: str = "",
        peer_buffer_bytes: int = 8 * 1024 * 1024,
        scan_interval: float = 0.5,
    ) -> None:
        self._base = Path(directory) if directory else default_directory()
        self._configured_group = group
        self._peer_buffer_bytes = peer_buffer_bytes
        self._pid = os.getpid()
        self._group: str | None = None
        self._folder: GroupFolder | None = None
        self._deliver: Deliver | None = None
        self._gap: Gap | None = None
        self._siblings = Siblings(
            pid=self._pid,
            peer_buffer_bytes=peer_buffer_bytes,
            scan_interval=scan_interval,
            on_frame=self._on_frame,
        )
        self._links: dict[int, OutboundLink] = self._siblings.links
        """The siblings' open links, walked by publish() itself: no call per message."""
        self.frames_out = 0
        self.frames_in = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, deliver: Deliver, gap: Gap) -> None:
        """Listen on this worker's socket, link to the siblings there, and keep scanning."""
        self._deliver = deliver
        self._gap = gap
        self._group = self._configured_group or default_group()
        if self._group is None:
            return  # a single-process server: nobody to find, nothing to pay
        folder = self._folder = GroupFolder(self._base, self._group, self._pid)
        folder.prepare()
        await self._siblings.start(folder)
        logger.info(
            "local backend: group %s at %s, %d sibling(s) linked",
            self._group,
            folder.path,
            len(self._links),
        )

    async def stop(self) -> None:
        """Close the socket and every link; remove this worker's socket file."""
        await self._siblings.stop()
        if self._folder is not None:
            self._folder.remove_if_empty()

    # -- messages --------------------------------------------------------------------------

    def publish(self, channel: str, message: Message) -> None:
        """Write the framed message to every sibling; never waits."""
        links = self._links
        if not links:
            return
        frame = framing.encode(channel, message)
        limit = self._peer_buffer_bytes
        overflowed: list[OutboundLink] | None = None
        for link in links.values():
            transport = link.transport
            transport.write(frame)
            if transport.get_write_buffer_size() > limit:
                overflowed = overflowed or []
                overflowed.append(link)
        self.frames_out += 1
        if overflowed:
            for link in overflowed:
                self._siblings.drop_slow(link)

    def subscribe(self, channel: str) -> None:
        """Every sibling gets every message; it drops those nobody there subscribes to."""

    def unsubscribe(self, channel: str) -> None:
        """See :meth:`subscribe`."""

    def status(self) -> dict[str, Any]:
        """Up always (a missing sibling is not an outage); links and counters for /stats."""
        siblings = self._siblings
        return {
            "name": self.name,
            "status": "up",
            "group": self._group,
            "peers": len(self._links),
            "inbound": len(siblings.inbound),
            "frames_out": self.frames_out,
            "frames_in": self.frames_in,
            "peer_overflows": siblings.peer_overflows,
            "stale_sockets_removed": self._folder.stale_removed if self._folder else 0,
        }

    def _on_frame(self, frame: framing.Frame, inbound: InboundLink) -> None:
        kind = frame.kind
        if kind in framing.DATA_KINDS:
            self.frames_in += 1
            assert self._deliver is not None
            self._deliver(frame.channel, frame.message())
        elif kind == framing.HELLO:
            pid = int(frame.payload)
            inbound.pid = pid
            self._siblings.hello(inbound, pid)
        elif kind == framing.GAP and self._gap is not None:
            self._gap("peer_overflow")
