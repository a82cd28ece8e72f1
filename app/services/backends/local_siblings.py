"""The links of one local:// worker to and from its siblings, kept whole by scanning the folder.

A scan (every FANOUT_LOCAL_SCAN_INTERVAL seconds, or at once when woken) links to every
sibling socket not linked yet. It is woken when a link is lost, when a link is dropped for
overflow, and when a new sibling says hello, so a sibling that appears or comes back is
linked to without waiting for the timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from app.logging_setup import LOGGER_NAME
from app.services import framing
from app.services.backends.local_folder import GroupFolder, pid_alive
from app.services.backends.local_links import InboundLink, OnFrame, OutboundLink

logger = logging.getLogger(LOGGER_NAME)

JOIN_TIMEOUT = 1.0
"""Seconds a starting worker waits for its siblings to link back before it serves clients."""

CONNECT_TIMEOUT = 1.0


class Siblings:
    """This worker's listening socket, its links to each sibling and theirs to it."""

    def __init__(
        self,
        *,
        pid: int,
        peer_buffer_bytes: int,
        scan_interval: float,
        on_frame: OnFrame,
    ) -> None:
        self._pid = pid
        self._peer_buffer_bytes = peer_buffer_bytes
        self._scan_interval = scan_interval
        self._on_frame = on_frame
        self._folder: GroupFolder | None = None
        self._server: asyncio.AbstractServer | None = None
        self.links: dict[int, OutboundLink] = {}
        """Open links to siblings, by their pid. Mutated, never rebound: LocalBackend.publish
        walks this very dict on every message."""
        self._connecting: set[int] = set()
        self.inbound: dict[int, InboundLink] = {}
        """Links from siblings that have said hello, by their pid."""
        self._inbound_all: set[InboundLink] = set()
        self._overflowed: set[int] = set()
        """Siblings whose link was dropped for overflow: their next link starts with GAP."""
        self._scan_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._hello_seen = asyncio.Event()
        self._stopping = False
        self.peer_overflows = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, folder: GroupFolder) -> None:
        """Listen on this worker's socket, link to the siblings there, and keep scanning."""
        self._folder = folder
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._accept, str(folder.socket))
        os.chmod(folder.socket, 0o600)
        await self._scan()
        # Serve clients only once the siblings found have linked back (they are woken by our
        # hello), so a restarted worker's first clients miss nothing from the others.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(JOIN_TIMEOUT):
                while not set(self.links) <= set(self.inbound):
                    self._hello_seen.clear()
                    await self._hello_seen.wait()
        self._scan_task = asyncio.create_task(self._scan_loop(), name="fanout-local-scan")

    async def stop(self) -> None:
        """Close the socket and every link; remove this worker's socket file."""
        self._stopping = True
        if self._scan_task is not None:
            self._scan_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan_task
            self._scan_task = None
        if self._server is not None:
            self._server.close()
            # Unlink first: a sibling scanning now must not take this worker for a live one.
            if self._folder is not None:
                self._folder.leave()
            for inbound in list(self._inbound_all):
                inbound.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self.links.values()):
            link.transport.close()  # flushes what is buffered (a last heartbeat, a goodbye)
        self.links.clear()

    # -- links -----------------------------------------------------------------------------

    def drop_slow(self, link: OutboundLink) -> None:
        """Abort a link whose buffer passed its bound; the next scan reopens it with GAP."""
        self.peer_overflows += 1
        self._overflowed.add(link.pid)
        logger.warning(
            "local backend: sibling %d fell %d bytes behind (limit %d); dropping its link "
            "and reconnecting",
            link.pid,
            link.transport.get_write_buffer_size(),
            self._peer_buffer_bytes,
        )
        self.links.pop(link.pid, None)
        link.transport.abort()
        self._wake.set()

    def hello(self, inbound: InboundLink, pid: int) -> None:
        """A sibling's link has said who it is."""
        self.inbound[pid] = inbound
        self._hello_seen.set()
        if pid not in self.links and not self._stopping:
            self._wake.set()  # a new sibling: link back now rather than at the next scan

    def _accept(self) -> InboundLink:
        return InboundLink(self._on_frame, self._inbound_all.add, self._inbound_lost)

    def _link_lost(self, link: OutboundLink) -> None:
        if self.links.get(link.pid) is link:
            del self.links[link.pid]
            if not self._stopping:
                self._wake.set()

    def _inbound_lost(self, inbound: InboundLink) -> None:
        self._inbound_all.discard(inbound)
        if inbound.pid is not None and self.inbound.get(inbound.pid) is inbound:
            del self.inbound[inbound.pid]

    # -- discovery -------------------------------------------------------------------------

    async def _scan_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._scan_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._scan()
            except OSError as exc:
                assert self._folder is not None
                logger.warning("local backend: scan of %s failed: %s", self._folder.path, exc)

    async def _scan(self) -> None:
        """Link to every sibling socket not linked yet; remove the sockets of dead workers."""
        assert self._folder is not None
        for pid in self._folder.sibling_pids():
            if pid not in self.links and pid not in self._connecting:
                await self._connect(pid)

    async def _connect(self, pid: int) -> None:
        assert self._folder is not None
        path = self._folder.socket_of(pid)
        loop = asyncio.get_running_loop()
        self._connecting.add(pid)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                transport, link = await loop.create_unix_connection(
                    lambda: OutboundLink(pid, self._peer_buffer_bytes, self._link_lost), str(path)
                )
        except (ConnectionRefusedError, FileNotFoundError, TimeoutError, OSError) as exc:
            if not pid_alive(pid):
                # Nobody listens and the process is gone: a crashed or killed worker's socket.
                self._folder.remove_stale_socket(path)
            else:
                logger.debug("local backend: sibling %d not reachable yet: %s", pid, exc)
            return
        finally:
            self._connecting.discard(pid)
        if self._stopping:
            transport.close()
            return
        transport.write(framing.encode_control(framing.HELLO, payload=str(self._pid).encode()))
        if pid in self._overflowed:
            self._overflowed.discard(pid)
            transport.write(framing.encode_control(framing.GAP))
        self.links[pid] = link
        logger.info("local backend: linked to sibling %d", pid)
