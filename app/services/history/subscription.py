"""HistorySubscription: a fanout.v1 subscription to a history channel, in front of its
connection in the channel's fan-out."""

from __future__ import annotations

from app.services.close_codes import CloseCode
from app.services.connection import Connection
from app.services.message import Message

HELD_MAX = 10_000
"""Publications held while the subscription's recovery is read; past it the client is a
slow consumer (its connection's own bound would be reached first in practice)."""


class HistorySubscription:
    """Holds publications while the subscribe reply (with what the client missed) is being
    read from the store, then lets through only what comes after it.

    The reply and the live publications that follow it then have no duplicate and no hole:
    whatever the sequencer delivers at or below the reply's offset was in the reply (or
    before the client's ``since``) and is dropped.
    """

    __slots__ = ("_conn", "_floor", "_held")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._held: list[Message] | None = []
        self._floor = 0

    def offer(self, message: Message) -> bool:
        """Hold ``message`` during recovery, drop it if the reply covered it, else pass it."""
        held = self._held
        if held is not None:
            if len(held) >= HELD_MAX:
                self._conn.close(CloseCode.SLOW_CONSUMER, "slow consumer")
                return False
            held.append(message)
            return True
        offset = message.offset
        if offset is not None and offset <= self._floor:
            return False
        return self._conn.offer(message)

    def release(self, floor: int) -> None:
        """The reply (up to offset ``floor``) went out: pass on what came after it."""
        held, self._held = self._held or [], None
        self._floor = floor
        for message in held:
            self.offer(message)
