"""DeadlineQueue: one timer for every socket's keepalive ping (and one for pong deadlines).

uvicorn's websockets-sansio protocol keeps a ``loop.call_later`` handle per connection for
its next ping (``--ws-ping-interval``, 20 s) and one for the pong deadline: under uvloop a
handle and its libuv timer are about 600 bytes that every idle socket holds all its life,
and one is made and cancelled per ping and per connection. Every socket of a server
waits the same interval, so deadlines added one after another are due one after another:
a FIFO per kind of deadline, served by a single timer, keeps them in order with a
48-byte entry each. A deadline is cancelled by clearing its entry, which the clock then
skips. Late by at most :data:`GRANULARITY` (deadlines due within it fire together).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

GRANULARITY = 0.05
"""Seconds: deadlines due this close together fire in one wake-up."""


class Deadline:
    """One pending deadline; ``cancel()`` like an asyncio ``TimerHandle``."""

    __slots__ = ("due", "owner")

    def __init__(self, due: float, owner: Any) -> None:
        self.due = due
        self.owner: Any = owner

    def cancel(self) -> None:
        """The deadline will not fire (its entry stays queued until it is due)."""
        self.owner = None


class DeadlineQueue:
    """Deadlines of one kind, added in due order (the same delay for all, roughly), fired by
    calling ``fire(owner)`` with one timer for the whole queue."""

    __slots__ = ("_entries", "_fire", "_handle", "_loop")

    def __init__(self, fire: Callable[[Any], None]) -> None:
        self._fire = fire
        self._entries: deque[Deadline] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, loop: asyncio.AbstractEventLoop, delay: float, owner: Any) -> Deadline:
        """Fire for ``owner`` in ``delay`` seconds (after the deadlines added before it)."""
        deadline = Deadline(loop.time() + delay, owner)
        self._entries.append(deadline)
        if self._handle is None:
            self._loop = loop
            self._handle = loop.call_at(deadline.due, self._run)
        return deadline

    def cancel(self, deadline: Deadline) -> None:
        """Cancel ``deadline`` (added here), and drop the cancelled entries at the back of
        the queue: one cancelled soon after it was added (a request head read at once) then
        holds no memory for the rest of its delay."""
        deadline.owner = None
        entries = self._entries
        while entries and entries[-1].owner is None:
            entries.pop()

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        entries = self._entries
        horizon = loop.time() + GRANULARITY
        fire = self._fire
        # Only what is due now: owners that re-arm from fire() land behind the horizon.
        while entries and entries[0].due <= horizon:
            deadline = entries.popleft()
            owner = deadline.owner
            if owner is not None:
                deadline.owner = None
                fire(owner)
        self._handle = loop.call_at(entries[0].due, self._run) if entries else None

    def close(self) -> None:
        """Stop the timer and forget every deadline."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._entries.clear()
