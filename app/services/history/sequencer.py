"""Sequencer: a history channel's publications delivered on this worker in offset order.

Publications reach a worker from its own clients and from every other worker, over links
that may reorder them between workers or lose them (a dropped Pub/Sub message, a backend
outage). Per channel with local subscribers, the sequencer delivers offset N only after
N-1; a later one waits (bounded, briefly), and a hole that does not close by itself is
filled from the store. Only what the store no longer holds becomes a gap event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.logging_setup import LOGGER_NAME
from app.services.message import Message

logger = logging.getLogger(LOGGER_NAME)

FILL_DELAY = 0.1
"""Seconds a hole may stay open (a reordered message on its way) before the store fills it."""
PENDING_MAX = 1024
"""Publications held behind a hole per channel; one more fills the hole at once."""
CHANNELS_MAX = 100_000
"""Channels whose position is remembered; past it the oldest are forgotten."""

Fill = Callable[[str, int, int], Awaitable[list[Message] | None]]
"""Reads ``channel``'s publications with offsets in (after, upto) from the store, stamped;
None when the store cannot say (unreachable, or they are no longer kept)."""


@dataclass
class _Channel:
    epoch: str
    next: int
    """The next offset to deliver."""
    pending: dict[int, Message] = field(default_factory=dict)
    filling: asyncio.Task[None] | None = None


class Sequencer:
    """Delivers stamped publications in offset order per channel, filling holes."""

    def __init__(
        self,
        deliver: Callable[[str, Message], None],
        fill: Fill,
        gap: Callable[[str, str], None],
    ) -> None:
        self._deliver = deliver
        self._fill = fill
        self._gap = gap
        self._channels: dict[str, _Channel] = {}
        self.filled = 0
        """Publications delivered from the store to close a hole."""
        self.holes = 0
        """Holes the store could not fill (each a gap event)."""

    def position(self, channel: str) -> tuple[str, int] | None:
        """(epoch, last delivered offset) on this worker, None when not followed."""
        state = self._channels.get(channel)
        return None if state is None else (state.epoch, state.next - 1)

    def offer(self, channel: str, message: Message) -> None:
        """Deliver ``message`` (stamped) now if it is next, else hold it or drop a repeat."""
        offset = message.offset
        assert offset is not None
        state = self._channels.get(channel)
        if state is None or state.epoch != message.epoch:
            if state is not None:
                self._reset(channel, state, "history_reset")
            if len(self._channels) >= CHANNELS_MAX:
                self._forget_oldest()
            state = self._channels[channel] = _Channel(message.epoch, offset)
        if offset < state.next or offset in state.pending:
            return  # a repeat: delivered or held already
        if offset > state.next:
            state.pending[offset] = message
            if len(state.pending) > PENDING_MAX:
                self._start_fill(channel, state, delay=0.0)
            elif state.filling is None:
                self._start_fill(channel, state, delay=FILL_DELAY)
            return
        self._deliver(channel, message)
        state.next = offset + 1
        self._release(channel, state)

    def refill(self, channel: str) -> None:
        """The backend may have lost publications on ``channel`` (it reconnected): read
        from the store whatever came after the last one delivered."""
        state = self._channels.get(channel)
        if state is not None and state.filling is None:
            self._start_fill(channel, state, delay=0.0, to_end=True)

    def forget(self, channel: str) -> None:
        """Stop following ``channel`` (its last local subscriber left)."""
        state = self._channels.pop(channel, None)
        if state is not None and state.filling is not None:
            state.filling.cancel()

    async def stop(self) -> None:
        """Cancel and await every fill in progress."""
        tasks = [s.filling for s in self._channels.values() if s.filling is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._channels.clear()

    def _release(self, channel: str, state: _Channel) -> None:
        """Deliver what waited for the offsets just delivered."""
        pending = state.pending
        while state.next in pending:
            self._deliver(channel, pending.pop(state.next))
            state.next += 1

    def _start_fill(
        self, channel: str, state: _Channel, *, delay: float, to_end: bool = False
    ) -> None:
        if state.filling is not None:
            state.filling.cancel()
        state.filling = asyncio.create_task(
            self._fill_hole(channel, state, delay, to_end), name=f"fanout-history-fill-{channel}"
        )

    async def _fill_hole(self, channel: str, state: _Channel, delay: float, to_end: bool) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            if not state.pending and not to_end:
                return  # the hole closed by itself
            upto = min(state.pending) if state.pending else 0  # 0: to the newest
            messages = await self._fill(channel, state.next - 1, upto)
            if self._channels.get(channel) is not state:
                return  # forgotten or reset meanwhile
            if messages is None:
                self.holes += 1
                self._gap(channel, "history_unavailable")
                if state.pending:
                    state.next = min(state.pending)  # go on after the hole
            else:
                for message in messages:
                    if message.offset == state.next and message.epoch == state.epoch:
                        self.filled += 1
                        self._deliver(channel, message)
                        state.next += 1
                if state.pending and state.next < min(state.pending):
                    self.holes += 1
                    self._gap(channel, "history_trimmed")
                    state.next = min(state.pending)
            self._release(channel, state)
        finally:
            if state.filling is asyncio.current_task():
                state.filling = None
            if state.pending and state.filling is None and self._channels.get(channel) is state:
                self._start_fill(channel, state, delay=FILL_DELAY)

    def _reset(self, channel: str, state: _Channel, reason: str) -> None:
        if state.filling is not None:
            state.filling.cancel()
        logger.warning("history of %s changed epoch: subscribers told (%s)", channel, reason)
        self._gap(channel, reason)

    def _forget_oldest(self) -> None:
        oldest = next(iter(self._channels))
        self.forget(oldest)
