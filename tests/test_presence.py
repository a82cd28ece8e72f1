"""Presence on real servers: ``uvicorn --workers 3`` on local://, two servers on one Redis.

Which worker accepts a connection is the kernel's choice; a client id's prefix names its
worker, so the tests open clients until every worker holds one. Events, answers and
timings are read from real fanout.v1 clients; a worker is killed with SIGKILL by its pid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support.metrics import scrape
from tests.support.protocol import V1Client, v1_client
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, StartServer
from tests.support.stats import fetch_stats, workers_linked
from tests.support.tokens import SECRET, connection_token
from tests.support.waiting import eventually

GRACE = 2.0
EXPIRY = 1.5
RULES = f"""
[[channels]]
match = "room.*"
presence = true
join_leave = true
presence_leave_grace = {GRACE}

[[channels]]
match = "count.*"
presence = true

[[channels]]
match = "members.*"
subscribe = "authenticated"
presence = true
"""
KEY = "presence-key"
FAST = {"FANOUT_HEARTBEAT_INTERVAL": "0.25", "FANOUT_HEARTBEAT_EXPIRY": str(EXPIRY)}


SLACK = {"FANOUT_HEARTBEAT_EXPIRY": "5"}
"""For the event tests: on a loaded machine a 1.5 s expiry can pass between two digests,
and a worker heard again after it expired rightly repeats its members' joins."""


def env_for(folder: Path, **extra: str) -> dict[str, str]:
    rules = folder / "fanout.toml"
    rules.write_text(RULES)
    return {
        "FANOUT_CONFIG": str(rules),
        "FANOUT_TOKEN_HMAC_SECRET": SECRET,
        "FANOUT_API_KEYS": KEY,
        "FANOUT_LOCAL_DIR": str(folder),
        **FAST,
        **extra,
    }


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One single-process server with the rules above."""
    proc = ServerProcess(env_for(tmp_path_factory.mktemp("presence"))).start()
    yield proc
    proc.stop()


class Member:
    """A connected fanout.v1 client of ``user`` with its client id, and the server it comes
    back to when it reconnects."""

    def __init__(self, client: V1Client, id: str, user: str, server: ServerProcess) -> None:
        self.client = client
        self.id = id
        self.user = user
        self.server = server

    @property
    def worker(self) -> str:
        return self.id.rpartition("-")[0]


async def join(stack: AsyncExitStack, server: ServerProcess, user: str) -> Member:
    """A client connected as ``user`` (anonymous for ``""``)."""
    client = await stack.enter_async_context(v1_client(server))
    if user:
        reply = await client.call(
            "connect", token=connection_token(user, info={"name": user.upper()})
        )
    else:
        reply = await client.call("connect")
    return Member(client, reply["res"]["client"], user, server)


async def one_per_worker(
    stack: AsyncExitStack, server: ServerProcess, workers: int, prefix: str
) -> list[Member]:
    """Clients until every worker holds one; the extras are closed again."""
    chosen: dict[str, Member] = {}
    for i in range(200):
        member = await join(stack, server, f"{prefix}{i}")
        if member.worker in chosen:
            await member.client.ws.close()
        else:
            chosen[member.worker] = member
            if len(chosen) == workers:
                return list(chosen.values())
    raise AssertionError(f"200 clients and still not on {workers} workers")


async def events(client: V1Client, within: float) -> list[dict[str, Any]]:
    """Every push ``client`` gets within ``within`` seconds."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(await client.push_json(left))
        except TimeoutError:
            break
    return got


async def next_event(client: V1Client, ev: str, within: float = 10.0) -> dict[str, Any]:
    """The next ``ev`` event; other pushes before it fail the test."""
    body = await client.push_json(within)
    assert body.get("ev") == ev, body
    return body


async def answer(client: V1Client, op: str, channel: str) -> dict[str, Any]:
    reply = await client.call(op, ch=channel)
    assert "res" in reply, reply
    result: dict[str, Any] = reply["res"]
    return result


async def members_are(client: V1Client, channel: str, expected: dict[str, str]) -> bool:
    """Whether ``client``'s presence answer is exactly ``expected`` (client id -> user)."""
    clients = (await answer(client, "presence", channel))["clients"]
    return {c: v["user"] for c, v in clients.items()} == expected


def cluster_log(members: list[Member]) -> str:
    """What the members' servers logged about presence and their backend (a worker
    dropped as silent and heard again, an outage): the context of an unexpected event."""
    lines: list[str] = []
    for server in dict.fromkeys(m.server for m in members):
        lines.append(f"== {server.log_path.name}")
        lines += [
            line
            for line in server.log().splitlines()
            if "presence:" in line or "backend" in line or "Traceback" in line
        ]
    return "\n".join(lines)


async def check_join_leave_and_grace(members: list[Member], stack: AsyncExitStack) -> None:
    """``members`` (on different workers or hosts) join room.1 in turn; every one sees every
    later join; a reconnect within the grace is no event; a real leave comes after it."""
    channel = "room.1"
    for i, member in enumerate(members):
        await member.client.subscribe(channel)
        for seen_by in members[: i + 1]:
            event = await seen_by.client.push_json(10.0)
            if seen_by is member:
                # A worker's own subscribers get its join at once, the other workers through
                # the backend, later: the join of a member on another worker that subscribed
                # just before may reach this one's worker after its subscription, and then
                # comes to it as well (that worker learns of the member only then). Once,
                # and before its own join.
                early = {m.id for m in members[:i] if m.worker != member.worker}
                while event.get("ev") == "join" and event["who"]["client"] in early:
                    early.discard(event["who"]["client"])
                    event = await seen_by.client.push_json(10.0)
            assert event == {
                "ch": channel,
                "ev": "join",
                "who": {
                    "client": member.id,
                    "user": member.user,
                    "info": {"name": member.user.upper()},
                },
            }, f"{seen_by.id} after {member.id} subscribed:\n{cluster_log(members)}"
    expected = {m.id: m.user for m in members}
    for member in members:
        assert await eventually(partial(members_are, member.client, channel, expected))
        n = len(members)
        assert await answer(member.client, "presence_stats", channel) == {"clients": n, "users": n}

    # A reload: the second member's user reconnects (on whichever worker) and subscribes
    # again within the grace: nobody sees a leave or a join.
    flapper = members[1]
    await flapper.client.ws.close()
    back = await join(stack, flapper.server, flapper.user)
    await back.client.subscribe(channel)
    watchers = [m for m in members if m is not flapper]
    quiet = await asyncio.gather(*(events(m.client, GRACE + 1.5) for m in watchers))
    assert quiet == [[] for _ in watchers], "a reconnect within the grace made events"
    expected = {m.id: m.user for m in watchers} | {back.id: back.user}
    assert await eventually(lambda: members_are(watchers[0].client, channel, expected))

    # A real leave: the last member goes and stays gone; the leave comes after the grace.
    leaver = members[-1]
    await leaver.client.ws.close()
    gone_at = time.monotonic()
    observer = members[0].client
    event = await next_event(observer, "leave", within=GRACE + 5)
    waited = time.monotonic() - gone_at
    assert event["who"] == {
        "client": leaver.id,
        "user": leaver.user,
        "info": {"name": leaver.user.upper()},
    }
    assert GRACE - 0.2 <= waited <= GRACE + 2.0, waited
    assert await next_event(back.client, "leave") == event  # and on the other worker too


async def test_join_leave_and_grace_across_three_workers(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(env=env_for(tmp_path, **SLACK), args=["--workers", "3"])
    assert await eventually(lambda: workers_linked(server, 3), within=20)
    async with AsyncExitStack() as stack:
        members = await one_per_worker(stack, server, 3, "w")
        assert len({m.worker for m in members}) == 3
        await check_join_leave_and_grace(members, stack)


async def test_join_leave_and_grace_across_two_hosts_on_one_redis(
    start_server: StartServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = env_for(tmp_path, FANOUT_BACKEND=redis_server.url, **SLACK)
    a, b = start_server(env=env), start_server(env=env)
    assert await eventually(lambda: workers_linked(a, 2), within=20)
    async with AsyncExitStack() as stack:
        members = [
            await join(stack, a, "h0"),
            await join(stack, b, "h1"),
            await join(stack, b, "h2"),
        ]
        members[1].server = a  # the flapper, on b, comes back on the other host
        await check_join_leave_and_grace(members, stack)


async def test_a_killed_workers_members_are_gone_within_the_expiry(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(env=env_for(tmp_path), args=["--workers", "3"])
    assert await eventually(lambda: workers_linked(server, 3), within=20)
    async with AsyncExitStack() as stack:
        members = await one_per_worker(stack, server, 3, "k")
        pids: dict[str, int] = {}
        for member in members:
            # The worker whose presence count goes up is the member's: its pid is in /stats.
            await member.client.subscribe("count.k")
            seen: dict[str, Any] = {}

            async def counted(n: int = len(pids) + 1, seen: dict[str, Any] = seen) -> bool:
                stats = seen["stats"] = await fetch_stats(server)
                return bool(
                    stats["presence_members"] == n
                    and sum(w["presence_members"] for w in stats["workers"]) == n
                )

            assert await eventually(counted, within=10)
            owners = {w["pid"] for w in seen["stats"]["workers"] if w["presence_members"]}
            (pid,) = owners - set(pids.values())
            pids[member.id] = pid
        victim, *survivors = members
        os.kill(pids[victim.id], signal.SIGKILL)
        killed_at = time.monotonic()
        expected = {m.id: m.user for m in survivors}

        async def gone_everywhere() -> bool:
            return all([await members_are(m.client, "count.k", expected) for m in survivors])

        assert await eventually(gone_everywhere, within=EXPIRY + 3, step=0.1)
        waited = time.monotonic() - killed_at
        assert waited <= EXPIRY + 1.0, f"gone after {waited:.2f} s, expiry {EXPIRY} s"
        for member in survivors:
            stats = await answer(member.client, "presence_stats", "count.k")
            assert stats == {"clients": 2, "users": 2}


async def test_a_killed_workers_user_gets_a_leave_after_the_expiry_and_the_grace(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(env=env_for(tmp_path), args=["--workers", "2"])
    assert await eventually(lambda: workers_linked(server, 2), within=20)
    async with AsyncExitStack() as stack:
        victim, survivor = await one_per_worker(stack, server, 2, "d")
        await survivor.client.subscribe("room.dead")
        await next_event(survivor.client, "join")
        await victim.client.subscribe("room.dead")
        # No wait for the member to reach the survivor's worker: a join goes out after the
        # batch that announces its member, so killing the victim's worker at once is fair.
        assert (await next_event(survivor.client, "join"))["who"]["client"] == victim.id
        pid = await _pid_of(server, victim)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        event = await next_event(survivor.client, "leave", within=EXPIRY + GRACE + 5)
        waited = time.monotonic() - killed_at
        assert event["who"]["client"] == victim.id
        assert GRACE <= waited <= EXPIRY + GRACE + 2.5, waited


async def _pid_of(server: ServerProcess, member: Member) -> int:
    """The pid of ``member``'s worker, the one whose presence count in /stats goes to 2
    (each worker holds one member before)."""
    await member.client.subscribe("count.pid")
    seen: dict[str, Any] = {}

    async def found() -> bool:
        stats = seen["stats"] = await fetch_stats(server)
        owners = [w for w in stats["workers"] if w["presence_members"] == 2]
        return len(owners) == 1

    assert await eventually(found, within=10)
    return int(next(w["pid"] for w in seen["stats"]["workers"] if w["presence_members"] == 2))


async def test_presence_and_stats_answer_only_subscribers_and_holders_of_the_capability(
    single: ServerProcess,
) -> None:
    async with AsyncExitStack() as stack:
        anonymous = await join(stack, single, "")
        alice = await join(stack, single, "alice")
        await alice.client.subscribe("members.a")
        # Not subscribed, no capability: 403; a channel without presence: 404.
        for op in ("presence", "presence_stats"):
            reply = await anonymous.client.call(op, ch="members.a")
            assert reply["error"]["code"] == 403, reply
            reply = await alice.client.call(op, ch="plain")
            assert reply["error"] == {
                "code": 404,
                "message": "presence is not enabled on this channel",
            }
        # A token capability grants it without subscribing.
        client = await stack.enter_async_context(v1_client(single))
        token = connection_token("auditor", caps=[{"match": ["members.*"], "allow": ["presence"]}])
        await client.call("connect", token=token)
        assert (await answer(client, "presence", "members.a"))["clients"] == {
            alice.id: {"user": "alice", "info": {"name": "ALICE"}}
        }
        assert await answer(client, "presence_stats", "members.a") == {"clients": 1, "users": 1}
        # Anonymous subscribers are clients, not users.
        await anonymous.client.subscribe("count.anon")
        await alice.client.subscribe("count.anon")
        assert await answer(alice.client, "presence_stats", "count.anon") == {
            "clients": 2,
            "users": 1,
        }
        await alice.client.call("unsub", ch="count.anon")
        assert await answer(anonymous.client, "presence_stats", "count.anon") == {
            "clients": 1,
            "users": 0,
        }


async def post(
    server: ServerProcess, path: str, body: Any, key: str | None = KEY
) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    async with httpx.AsyncClient(base_url=server.base, timeout=10.0) as client:
        return await client.post(path, headers=headers, json=body)


async def test_the_http_api_answers_presence_and_presence_stats(single: ServerProcess) -> None:
    async with AsyncExitStack() as stack:
        bob = await join(stack, single, "bob")
        guest = await join(stack, single, "")
        await bob.client.subscribe("count.api")
        await guest.client.subscribe("count.api")
        response = await post(single, "/api/presence", {"channel": "count.api"})
        assert response.status_code == 200
        assert response.json() == {
            "result": {
                "clients": {
                    bob.id: {"user": "bob", "info": {"name": "BOB"}},
                    guest.id: {"user": "", "info": None},
                }
            }
        }
        response = await post(single, "/api/presence_stats", {"channel": "count.api"})
        assert response.json() == {"result": {"clients": 2, "users": 1}}
    for path in ("/api/presence", "/api/presence_stats"):
        response = await post(single, path, {"channel": "plain"})
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "presence is not enabled on this channel"
        assert (await post(single, path, {"channel": "bad:name"})).status_code == 400
        assert (await post(single, path, {"nochannel": 1})).status_code == 400
        assert (await post(single, path, {"channel": "count.api"}, key=None)).status_code == 401
        async with httpx.AsyncClient(base_url=single.base) as client:
            assert (await client.get(path)).status_code == 405


async def test_stats_and_metrics_count_presence_members_per_worker(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(env=env_for(tmp_path), args=["--workers", "2"])
    assert await eventually(lambda: workers_linked(server, 2), within=20)
    async with AsyncExitStack() as stack:
        members = await one_per_worker(stack, server, 2, "m")
        for member in members:
            await member.client.subscribe("count.m")
            await member.client.subscribe("room.m")

        async def four() -> bool:
            stats = await fetch_stats(server)
            per_worker = [w["presence_members"] for w in stats["workers"]]
            return bool(stats["presence_members"] == 4 and per_worker == [2, 2])

        assert await eventually(four, within=10)

        async def scraped_four() -> bool:
            # Either worker answers; the other's figure is as of its last heartbeat.
            samples = (await scrape(server))["fanout_presence_members"].samples
            return sorted(s.value for s in samples) == [2.0, 2.0] and all(
                set(s.labels) == {"worker", "host"} for s in samples
            )

        assert await eventually(scraped_four, within=10)


async def test_raw_sockets_get_no_join_or_leave_events(single: ServerProcess) -> None:
    async with (
        websockets.connect(single.ws("/ws/broadcast/room.raw")) as raw,
        AsyncExitStack() as stack,
    ):
        carol = await join(stack, single, "carol")
        await carol.client.subscribe("room.raw")
        assert (await next_event(carol.client, "join"))["who"]["user"] == "carol"
        await carol.client.call("pub", ch="room.raw", text="hello")
        assert await asyncio.wait_for(raw.recv(), 5) == "hello"  # the first thing it gets
