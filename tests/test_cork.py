"""The worker's Cork: the first subscribers of a calm turn's message are written while the
fan-out goes on; a burst of messages in one turn is still written once per socket."""

from __future__ import annotations

import asyncio

from app.services.direct_connection import CORK_EAGER_BATCH, Cork
from app.services.latency import WriteLatency


class Sock:
    """Stands in for a DirectConnection: records when the cork flushed it."""

    def __init__(self, n: int, flushed: list[int]) -> None:
        self.n = n
        self.flushed = flushed

    def flush(self) -> None:
        self.flushed.append(self.n)


def offer_all(cork: Cork, socks: list[Sock]) -> None:
    """One message's fan-out, as BroadcastService.deliver does it."""
    cork.begin()
    try:
        for s in socks:
            cork.add(s)  # type: ignore[arg-type]
    finally:
        cork.end()


async def test_a_calm_turn_writes_the_first_subscribers_before_the_fan_out_ends() -> None:
    cork, flushed = Cork(WriteLatency()), list[int]()
    socks = [Sock(n, flushed) for n in range(100)]
    seen_mid_fan_out: list[int] = []
    cork.begin()
    for s in socks:
        cork.add(s)  # type: ignore[arg-type]
        if s.n == CORK_EAGER_BATCH:
            seen_mid_fan_out = list(flushed)
    cork.end()
    assert seen_mid_fan_out == list(range(CORK_EAGER_BATCH))
    assert len(flushed) < 100  # the remainder waits for the end of the turn
    await asyncio.sleep(0)
    assert flushed == list(range(100))


async def test_a_second_message_in_the_same_turn_waits_for_the_end_of_the_turn() -> None:
    cork, flushed = Cork(WriteLatency()), list[int]()
    socks = [Sock(n, flushed) for n in range(100)]
    offer_all(cork, socks)
    early = len(flushed)
    offer_all(cork, socks)  # the same turn: a burst, corked whole
    assert len(flushed) == early
    await asyncio.sleep(0)
    # The first message's last partial batch and all of the second go out at the end (a
    # real connection is added once per turn; these stubs are added once per offer).
    assert len(flushed) == 200
    # The turn after a burst corks its first message too, and the next calm one does not.
    flushed.clear()
    offer_all(cork, socks)
    assert flushed == []
    await asyncio.sleep(0)
    flushed.clear()
    offer_all(cork, socks)
    assert flushed[:CORK_EAGER_BATCH] == list(range(CORK_EAGER_BATCH))


async def test_offers_outside_a_fan_out_wait_for_the_end_of_the_turn() -> None:
    cork, flushed = Cork(WriteLatency()), list[int]()
    for n in range(3 * CORK_EAGER_BATCH):
        cork.add(Sock(n, flushed))  # type: ignore[arg-type]
    assert flushed == []
    await asyncio.sleep(0)
    assert len(flushed) == 3 * CORK_EAGER_BATCH
