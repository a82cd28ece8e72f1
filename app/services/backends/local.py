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

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

from app.services import framing
from app.services.backends.base import Deliver, Gap
from app.services.message import Message

logger = logging.getLogger("fanout")

BATCH = 32
"""Frames delivered before the reader lets the client writers run (as the receive loop does)."""

MAX_FRAME_BYTES = 64 * 1024 * 1024
"""A frame announcing more than this is garbage: the link is dropped."""

JOIN_TIMEOUT = 1.0
"""Seconds a starting worker waits for its siblings to link back before it serves clients."""

CONNECT_TIMEOUT = 1.0


def default_directory() -> Path:
    """$XDG_RUNTIME_DIR/fanout, or a per-user folder in the temporary directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "fanout"
    return Path(tempfile.gettempdir()) / f"fanout-{os.getuid()}"


def default_group() -> str | None:
    """``sup-<supervisor pid>`` for a worker of a multi-process server, None when alone."""
    if multiprocessing.parent_process() is None:
        return None
    return f"sup-{os.getppid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalBackend:
    """Backend for the workers of one host; see the module documentation."""

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
        self._scan_interval = scan_interval
        self._pid = os.getpid()
        self._group: str | None = None
        self._folder: Path | None = None
        self._path: Path | None = None
        self._server: asyncio.AbstractServer | None = None
        self._deliver: Deliver | None = None
        self._gap: Gap | None = None
        self._links: dict[int, _Outbound] = {}
        """Open links to siblings, by their pid."""
        self._connecting: set[int] = set()
        self._inbound: dict[int, _Inbound] = {}
        """Links from siblings that have said hello, by their pid."""
        self._inbound_all: set[_Inbound] = set()
        self._overflowed: set[int] = set()
        """Siblings whose link was dropped for overflow: their next link starts with GAP."""
        self._scan_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._hello_seen = asyncio.Event()
        self._stopping = False
        self.frames_out = 0
        self.frames_in = 0
        self.peer_overflows = 0
        self.stale_removed = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, deliver: Deliver, gap: Gap) -> None:
        """Listen on this worker's socket, link to the siblings there, and keep scanning."""
        self._deliver = deliver
        self._gap = gap
        self._group = self._configured_group or default_group()
        if self._group is None:
            return  # a single-process server: nobody to find, nothing to pay
        folder = self._folder = self._base / self._group
        # 0o700: only this user's processes may join the group or read its traffic.
        self._base.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        self._remove_stale_groups()
        path = self._path = folder / f"{self._pid}.sock"
        if len(os.fsencode(path)) > 100:
            raise OSError(
                f"local:// socket path too long for AF_UNIX: {path}; set FANOUT_LOCAL_DIR"
            )
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by an earlier process that had this pid
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Inbound(self), str(path))
        os.chmod(path, 0o600)
        await self._scan()
        # Serve clients only once the siblings found have linked back (they are woken by our
        # hello), so a restarted worker's first clients miss nothing from the others.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(JOIN_TIMEOUT):
                while not set(self._links) <= set(self._inbound):
                    self._hello_seen.clear()
                    await self._hello_seen.wait()
        self._scan_task = asyncio.create_task(self._scan_loop(), name="fanout-local-scan")
        logger.info(
            "local backend: group %s at %s, %d sibling(s) linked",
            self._group,
            folder,
            len(self._links),
        )

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
            if self._path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._path.unlink()
            for inbound in list(self._inbound_all):
                inbound.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self._links.values()):
            link.transport.close()  # flushes what is buffered (a last heartbeat, a goodbye)
        self._links.clear()
        if self._folder is not None:
            with contextlib.suppress(OSError):
                self._folder.rmdir()  # only when this was the last worker of the group

    # -- messages --------------------------------------------------------------------------

    def publish(self, channel: str, message: Message) -> None:
        """Write the framed message to every sibling; never waits."""
        links = self._links
        if not links:
            return
        frame = framing.encode(channel, message)
        limit = self._peer_buffer_bytes
        overflowed: list[_Outbound] | None = None
        for link in links.values():
            transport = link.transport
            transport.write(frame)
            if transport.get_write_buffer_size() > limit:
                overflowed = overflowed or []
                overflowed.append(link)
        self.frames_out += 1
        if overflowed:
            for link in overflowed:
                self._drop_slow_peer(link)

    def subscribe(self, channel: str) -> None:
        """Every sibling gets every message; it drops those nobody there subscribes to."""

    def unsubscribe(self, channel: str) -> None:
        """See :meth:`subscribe`."""

    def status(self) -> dict[str, Any]:
        """Up always (a missing sibling is not an outage); links and counters for /stats."""
        return {
            "name": self.name,
            "status": "up",
            "group": self._group,
            "peers": len(self._links),
            "inbound": len(self._inbound),
            "frames_out": self.frames_out,
            "frames_in": self.frames_in,
            "peer_overflows": self.peer_overflows,
            "stale_sockets_removed": self.stale_removed,
        }

    # -- links -----------------------------------------------------------------------------

    def _drop_slow_peer(self, link: _Outbound) -> None:
        self.peer_overflows += 1
        self._overflowed.add(link.pid)
        logger.warning(
            "local backend: sibling %d fell %d bytes behind (limit %d); dropping its link "
            "and reconnecting",
            link.pid,
            link.transport.get_write_buffer_size(),
            self._peer_buffer_bytes,
        )
        self._links.pop(link.pid, None)
        link.transport.abort()
        self._wake.set()

    def _link_lost(self, link: _Outbound) -> None:
        if self._links.get(link.pid) is link:
            del self._links[link.pid]
            if not self._stopping:
                self._wake.set()

    def _hello(self, inbound: _Inbound, pid: int) -> None:
        self._inbound[pid] = inbound
        self._hello_seen.set()
        if pid not in self._links and not self._stopping:
            self._wake.set()  # a new sibling: link back now rather than at the next scan

    def _inbound_lost(self, inbound: _Inbound) -> None:
        self._inbound_all.discard(inbound)
        if inbound.pid is not None and self._inbound.get(inbound.pid) is inbound:
            del self._inbound[inbound.pid]

    def _on_frame(self, frame: framing.Frame, inbound: _Inbound) -> None:
        kind = frame.kind
        if kind == framing.DATA_TEXT or kind == framing.DATA_BINARY:
            self.frames_in += 1
            assert self._deliver is not None
            self._deliver(frame.channel, frame.message())
        elif kind == framing.HELLO:
            pid = int(frame.payload)
            inbound.pid = pid
            self._hello(inbound, pid)
        elif kind == framing.GAP and self._gap is not None:
            self._gap("peer_overflow")

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
                logger.warning("local backend: scan of %s failed: %s", self._folder, exc)

    async def _scan(self) -> None:
        """Link to every sibling socket not linked yet; remove the sockets of dead workers."""
        assert self._folder is not None
        try:
            entries = os.listdir(self._folder)
        except FileNotFoundError:
            # Removed under us (by hand, or a sibling's stale clean-up raced): recreate ours.
            self._folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            return
        pids = []
        for entry in entries:
            stem, dot, ext = entry.partition(".")
            if dot and ext == "sock" and stem.isdigit() and int(stem) != self._pid:
                pids.append(int(stem))
        for pid in pids:
            if pid not in self._links and pid not in self._connecting:
                await self._connect(pid)

    async def _connect(self, pid: int) -> None:
        assert self._folder is not None
        path = self._folder / f"{pid}.sock"
        loop = asyncio.get_running_loop()
        self._connecting.add(pid)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                transport, link = await loop.create_unix_connection(
                    lambda: _Outbound(self, pid), str(path)
                )
        except (ConnectionRefusedError, FileNotFoundError, TimeoutError, OSError) as exc:
            if not pid_alive(pid):
                # Nobody listens and the process is gone: a crashed or killed worker's socket.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    self.stale_removed += 1
                    logger.info("local backend: removed stale socket %s", path)
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
        self._links[pid] = link
        logger.info("local backend: linked to sibling %d", pid)

    def _remove_stale_groups(self) -> None:
        """Remove the folders of supervisors that are gone (a crashed or killed run)."""
        try:
            entries = list(self._base.iterdir())
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if not name.startswith("sup-") or not name[4:].isdigit() or name == self._group:
                continue
            if pid_alive(int(name[4:])):
                continue
            # A folder whose sockets all belong to dead processes is a crashed run's leftover.
            sockets = [p for p in entry.glob("*.sock")]
            if any(p.stem.isdigit() and pid_alive(int(p.stem)) for p in sockets):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            self.stale_removed += len(sockets)
            logger.info("local backend: removed stale group folder %s", entry)


class _Outbound(asyncio.Protocol):
    """This worker's sending end of a link to one sibling."""

    def __init__(self, backend: LocalBackend, pid: int) -> None:
        self.backend = backend
        self.pid = pid
        self.transport: asyncio.WriteTransport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.WriteTransport, transport)
        # Writing never waits on pause_writing: the byte bound in publish() is the policy.
        self.transport.set_write_buffer_limits(high=self.backend._peer_buffer_bytes)

    def data_received(self, data: bytes) -> None:
        """Links are one-way; a sibling never writes back."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend._link_lost(self)


class _Inbound(asyncio.Protocol):
    """The receiving end of a sibling's link: frames in, messages delivered.

    Frames are delivered BATCH at a time, pausing reading in between, so a burst from a
    sibling lets the client writers run as a burst from a client does.
    """

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend
        self.pid: int | None = None
        self.transport: asyncio.Transport | None = None
        self._decoder = framing.FrameDecoder(MAX_FRAME_BYTES)
        self._draining = False
        self._paused = False
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.backend._inbound_all.add(self)

    def data_received(self, data: bytes) -> None:
        self._decoder.feed(data)
        if not self._draining:
            self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.backend._inbound_lost(self)

    def close(self) -> None:
        """Stop receiving from this sibling."""
        if self.transport is not None:
            self.transport.close()

    def _drain(self) -> None:
        decoder = self._decoder
        on_frame = self.backend._on_frame
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
