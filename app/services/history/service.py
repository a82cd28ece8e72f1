"""HistoryService: history channels' publications numbered, kept, delivered in order and
given back to clients that reconnect."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from app.logging_setup import LOGGER_NAME
from app.services.broadcast import BroadcastService
from app.services.history.sequencer import Sequencer
from app.services.history.store import (
    KIND_BINARY,
    KIND_JSON,
    KIND_TEXT,
    Entry,
    HistoryStore,
    HistoryUnavailable,
    Position,
    Retention,
)
from app.services.message import Message
from app.services.rules import ChannelRules

logger = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a subscriber asking ``since`` gets: the channel's position, whether the
    history still held everything it missed, and those publications (oldest first)."""

    position: Position
    recovered: bool
    entries: list[Entry]


def kind_of(message: Message) -> str:
    """The store's kind for ``message``."""
    return KIND_BINARY if message.text is None else KIND_JSON if message.is_json else KIND_TEXT


def message_of(entry: Entry, epoch: str) -> Message:
    """A stored publication as the stamped message the sequencer delivers."""
    if entry.kind == KIND_BINARY:
        return Message(entry.data, offset=entry.offset, epoch=epoch)
    return Message(
        entry.data,
        entry.data.decode(),
        is_json=entry.kind == KIND_JSON,
        offset=entry.offset,
        epoch=epoch,
    )


def encode_entries(entries: list[Entry]) -> msgspec.Raw:
    """``[{"o":N,"d":D}|{"o":N,"s":S}|{"o":N,"b":base64}, ...]``: ``d`` verbatim."""
    parts = []
    for entry in entries:
        if entry.kind == KIND_JSON:
            parts.append(b'{"o":%d,"d":%b}' % (entry.offset, entry.data))
        elif entry.kind == KIND_TEXT:
            parts.append(
                b'{"o":%d,"s":%b}' % (entry.offset, msgspec.json.encode(entry.data.decode()))
            )
        else:
            encoded = base64.b64encode(entry.data)
            parts.append(b'{"o":%d,"b":"%b"}' % (entry.offset, encoded))
    return msgspec.Raw(b"[" + b",".join(parts) + b"]")


class HistoryService:
    """Channels whose rule has ``history_size`` > 0: every publication gets the next offset
    from the store before it is delivered; every worker delivers them in offset order
    (:class:`Sequencer`), filling holes from the store; ``sub`` with ``since`` recovers
    what a client missed."""

    def __init__(
        self,
        store: HistoryStore,
        rules: ChannelRules,
        broadcast: BroadcastService,
        gap: Callable[[str, str], None],
    ) -> None:
        self.store = store
        self._rules = rules
        self._broadcast = broadcast
        self.sequencer = Sequencer(broadcast.deliver, self._read_range, gap)
        self.recoveries = 0
        self.recovery_failures = 0

    async def start(self) -> None:
        """Open the store."""
        await self.store.start()

    async def stop(self) -> None:
        """Stop filling holes and close the store."""
        await self.sequencer.stop()
        await self.store.stop()

    def retention(self, channel: str) -> Retention | None:
        """How much history ``channel`` keeps, None for a channel without history."""
        rule = self._rules.rule_for(channel)
        if rule.history_size <= 0:
            return None
        return Retention(rule.history_size, rule.history_ttl)

    async def publish(self, channel: str, message: Message, retention: Retention) -> Position:
        """Number and keep ``message``, then deliver it here (in order) and to every other
        worker. HistoryUnavailable when the store cannot be reached: nothing is delivered."""
        position = await self.store.append(channel, kind_of(message), message.data, retention)
        stamped = message.stamped(position.offset, position.epoch)
        self.deliver(channel, stamped)
        self._broadcast.backend.publish(channel, stamped)
        return position

    def deliver(self, channel: str, message: Message) -> None:
        """A stamped publication from this worker or another: delivered in offset order."""
        if self._broadcast.has_members(channel):
            self.sequencer.offer(channel, message)
        else:
            self.sequencer.forget(channel)

    async def recover(
        self, channel: str, since: tuple[int, str] | None, retention: Retention
    ) -> Recovery:
        """The position of ``channel`` and, with ``since`` (offset, epoch), what came after
        it if the history still holds all of it."""
        if since is None:
            position, _ = await self.store.read(channel, 0, 0, retention)
            return Recovery(position, False, [])
        offset, epoch = since
        position, entries = await self.store.read(channel, offset, None, retention)
        recovered = (
            epoch == position.epoch
            and offset <= position.offset
            and (offset == position.offset or (bool(entries) and entries[0].offset == offset + 1))
        )
        if recovered:
            self.recoveries += 1
        else:
            self.recovery_failures += 1
        return Recovery(position, recovered, entries if recovered else [])

    async def read(
        self, channel: str, since: tuple[int, str] | None, limit: int | None, retention: Retention
    ) -> tuple[Position, list[Entry]]:
        """``history``: publications after ``since`` when its epoch is current, else from the
        oldest kept; at most ``limit`` (None: all kept)."""
        if since is not None:
            # One read in the usual case (the epoch is current); a second only when not.
            position, entries = await self.store.read(channel, since[0], limit, retention)
            if since[1] == position.epoch:
                return position, entries
        return await self.store.read(channel, 0, limit, retention)

    async def _read_range(self, channel: str, after: int, upto: int) -> list[Message] | None:
        retention = self.retention(channel)
        if retention is None:
            return None
        try:
            position, entries = await self.store.read(channel, after, None, retention)
        except HistoryUnavailable:
            logger.warning("history of %s: store unavailable, cannot fill a hole", channel)
            return None
        # A hole the store no longer holds shows as entries starting above after + 1: the
        # sequencer delivers what there is and reports the rest as a gap.
        return [message_of(e, position.epoch) for e in entries if not upto or e.offset < upto]

    def figures(self) -> dict[str, Any]:
        """Counters for /stats."""
        return {
            "recoveries": self.recoveries,
            "recovery_failures": self.recovery_failures,
            "holes_filled": self.sequencer.filled,
            "holes_unfilled": self.sequencer.holes,
        }
