"""fanout_sdk.client against a scripted fanout.v1 server: recovery by offset, duplicates,
the 1012 hint, dead peers, slow readers and clean closing, which a real server cannot be
made to show on demand (or, for history, does not have yet)."""

from __future__ import annotations

import asyncio
import time

import pytest

from fanout_sdk import (
    Client,
    Gap,
    Publication,
    State,
    StateChange,
    Subscription,
    SubscriptionEvent,
)
from fanout_sdk.client import QUEUE_OVERFLOW
from tests.support.fake_v1 import FakeServer
from tests.support.waiting import eventually


async def _collect(sub: Subscription, count: int, within: float = 5.0) -> list[Publication]:
    out: list[Publication] = []
    async with asyncio.timeout(within):
        async for pub in sub:
            out.append(pub)
            if len(out) == count:
                break
    return out


async def test_a_reconnected_client_recovers_missed_publications_without_duplicates() -> None:
    async with FakeServer() as fake:
        fake.duplicate_pushes = True
        async with Client(fake.url, min_delay=0.05, max_delay=0.1) as client:
            sub = await client.subscribe("news")
            for n in (1, 2):
                await fake.publish("news", n)
            first = await _collect(sub, 2)
            await fake.close_all(1012, '{"reconnect_after_ms":300}')
            for n in (3, 4):  # while the client is away (for 300 ms at least)
                await fake.publish("news", n)
            assert await eventually(lambda: fake.connects == 2, within=5)
            assert await eventually(lambda: client.state is State.CONNECTED, within=5)
            await fake.publish("news", 5)
            rest = await _collect(sub, 3)
            assert [p.data for p in first + rest] == [1, 2, 3, 4, 5]
            assert [p.offset for p in first + rest] == [1, 2, 3, 4, 5]
            assert sub.duplicates >= 3  # two doubled pushes, one overlapping recovered pub
            resub = [c for c in fake.commands if c["op"] == "sub"][-1]
            assert resub["since"] == {"o": 2, "e": "e1"}
            with pytest.raises(TimeoutError):
                await sub.get(within=0.3)  # nothing more: no duplicate was queued


async def test_a_new_epoch_is_reported_as_a_gap_and_offsets_restart_from_it() -> None:
    events: list[SubscriptionEvent] = []
    async with FakeServer() as fake, Client(fake.url, min_delay=0.05, max_delay=0.1) as client:
        sub = await client.subscribe("news", on_event=events.append)
        await fake.publish("news", "a")
        await _collect(sub, 1)
        fake.channels["news"].epoch = "e2"
        fake.channels["news"].pubs = []
        await fake.close_all(1012)
        assert await eventually(lambda: fake.connects == 2, within=5)
        assert await eventually(lambda: client.state is State.CONNECTED, within=5)
        await fake.publish("news", "b")  # offset 1 again, in the new epoch
        [pub] = await _collect(sub, 1)
        assert pub.data == "b" and pub.offset == 1
        assert any(isinstance(e, Gap) and e.reason == "not_recovered" for e in events)
        assert sub.position is not None and sub.position.epoch == "e2"


async def test_a_1012_close_with_reconnect_after_ms_is_honoured() -> None:
    changes: list[StateChange] = []
    async with (
        FakeServer() as fake,
        Client(fake.url, on_state=changes.append, min_delay=0.01) as client,
    ):
        await fake.close_all(1012, '{"reconnect_after_ms":1200}')
        closed_at = time.monotonic()
        await eventually(lambda: fake.connects == 2, within=5)
        waited = time.monotonic() - closed_at
        assert waited >= 1.2
        [down] = [c for c in changes if c.state is State.DISCONNECTED]
        assert down.code == 1012 and down.reconnect_in is not None
        assert 1.2 <= down.reconnect_in <= 1.3
        assert client.state is State.CONNECTED or await eventually(
            lambda: client.state is State.CONNECTED
        )


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    client = Client("ws://127.0.0.1:1/ws", min_delay=0.5, max_delay=4.0)
    for cap in [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]:  # attempt by attempt
        assert 0 <= client._delay(1006, "", None) <= cap
    # Over many draws the spread reaches the cap's whole range: jitter, not a fixed step.
    draws = []
    for _ in range(400):
        client._attempt = 10
        draws.append(client._delay(1006, "", None))
    assert min(draws) < 0.5 and max(draws) > 3.5 and max(draws) <= 4.0


async def test_a_silent_server_is_detected_by_the_application_ping() -> None:
    async with FakeServer() as fake:
        client = Client(fake.url, ping_interval=0.3, ping_timeout=0.3, min_delay=0.05)
        try:
            await client.connect()
            fake.silent = True
            assert await eventually(lambda: len(fake.connections) >= 2, within=5)
        finally:
            await client.close()
        pings = [c for c in fake.commands if c["op"] == "ping"]
        assert pings, "the client sent no ping while the server was quiet"


async def test_a_slow_reader_loses_the_oldest_publications_not_memory() -> None:
    events: list[SubscriptionEvent] = []
    async with FakeServer() as fake, Client(fake.url) as client:
        sub = await client.subscribe("news", queue_size=10, on_event=events.append)
        for n in range(1, 26):
            await fake.publish("news", n)
        await eventually(lambda: sub.dropped == 15, within=5)
        got = await _collect(sub, 10)
        assert [p.data for p in got] == list(range(16, 26))
        gaps = [e for e in events if isinstance(e, Gap)]
        assert len(gaps) == 1 and gaps[0].reason == QUEUE_OVERFLOW  # once per run of drops


async def test_closing_the_client_cancels_every_task_it_started() -> None:
    before = asyncio.all_tasks()
    async with FakeServer() as fake:
        client = Client(fake.url, ping_interval=0.2)
        await client.connect()
        sub = await client.subscribe("news")
        waiter = asyncio.create_task(sub.get())
        await asyncio.sleep(0.3)
        await client.close()
        assert client.state is State.CLOSED
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiter, 2)
        assert not client._tasks
        await asyncio.sleep(0)
        left = {t for t in asyncio.all_tasks() - before if not t.done()}
        owners = {getattr(t.get_coro(), "__qualname__", "?") for t in left}
        # Only the fake server's own tasks may remain (it is still open), none of the client.
        assert not {name for name in owners if name.startswith(("Client", "Subscription"))}
