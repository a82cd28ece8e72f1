"""fanout_sdk.client against real servers (uvicorn subprocesses): publish and ack, error
codes, reconnect across a restart, no reconnect on 4500, token refresh, and recovery
from history: after a dropped connection, and across a killed and restarted ``--workers 2``
server on its history file (FANOUT_HISTORY_FILE)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout_sdk import (
    AsyncFanoutApi,
    Client,
    ClientClosed,
    CommandError,
    FanoutApi,
    Gap,
    State,
    StateChange,
    Subscribed,
    SubscriptionEvent,
    connection_token,
)
from tests.support.servers import PortTaken, ServerProcess, StartServer
from tests.support.tokens import SECRET
from tests.support.waiting import eventually

API_KEY = "sdk-test-key"
AUTH_ENV = {"FANOUT_API_KEYS": API_KEY, "FANOUT_TOKEN_HMAC_SECRET": SECRET}


@pytest.fixture(scope="module")
def two_workers() -> Iterator[ServerProcess]:
    """One server with two workers: clients land on either, messages cross between them."""
    proc = ServerProcess(AUTH_ENV, ["--workers", "2"]).start()
    yield proc
    proc.stop()


async def test_a_publish_is_acknowledged_and_reaches_subscribers_on_every_worker(
    two_workers: ServerProcess,
) -> None:
    url = two_workers.ws("/ws")
    clients = [Client(url) for _ in range(4)]  # four sockets: both workers get some
    try:
        subs = []
        for client in clients:
            await client.connect()
            subs.append(await client.subscribe("sdk.news"))
        publisher = clients[0]
        assert (await publisher.publish("sdk.news", {"n": 1})).offset is None
        await publisher.publish("sdk.news", text="two")
        await publisher.publish("sdk.news", binary=b"\x00\xff")
        await publisher.publish("sdk.news", None)  # JSON null is a value like any other
        for sub in subs:
            got = [await sub.get(within=5) for _ in range(4)]
            assert [p.kind for p in got] == ["json", "text", "binary", "json"]
            assert got[0].data == {"n": 1} and got[1].text == "two"
            assert got[2].binary == b"\x00\xff" and got[3].data is None
        ids = {client.client_id for client in clients}
        assert len(ids) == 4 and all(ids)
    finally:
        for client in clients:
            await client.close()


async def test_refusals_raise_command_errors_with_the_servers_code(
    two_workers: ServerProcess,
) -> None:
    async with Client(two_workers.ws("/ws")) as client:
        with pytest.raises(CommandError) as refused:
            await client.publish("sdk.elsewhere", 1)  # subscribers publish
        assert refused.value.code == 403
        with pytest.raises(CommandError) as bad:
            await client.subscribe("no:colons")
        assert bad.value.code == 400
        with pytest.raises(CommandError) as theirs:
            await client.subscribe("inbox#42")  # user 42's channel, and we are nobody
        assert theirs.value.code == 401
        await client.subscribe("sdk.mine")
        with pytest.raises(ValueError):
            await client.subscribe("sdk.mine")
        with pytest.raises(CommandError) as large:
            await client.publish("sdk.mine", text="x" * (1024 * 1024 + 1))
        assert large.value.code == 413
        assert client.state is State.CONNECTED  # errors do not cost the connection


def _restart_on_same_port(proc: ServerProcess) -> None:
    for _ in range(50):
        try:
            proc._start(20.0)  # the same port: clients must find the server where it was
            return
        except PortTaken:  # the old socket may linger for a moment
            time.sleep(0.1)
    raise AssertionError("could not restart on the same port")


async def test_the_client_reconnects_after_a_restart_and_resubscribes_every_channel(
    start_server: StartServer,
) -> None:
    server = start_server(env={"FANOUT_API_KEYS": API_KEY})
    changes: list[StateChange] = []
    async with Client(
        server.ws("/ws"), on_state=changes.append, min_delay=0.1, max_delay=0.5
    ) as client:
        news = await client.subscribe("news")
        sport = await client.subscribe("sport")
        first_id = client.client_id
        assert server.stop(signal.SIGTERM) is not None  # by PID
        assert await eventually(lambda: client.state is not State.CONNECTED, within=10)
        await asyncio.to_thread(_restart_on_same_port, server)
        assert await eventually(lambda: client.state is State.CONNECTED, within=15)
        assert client.client_id != first_id
        api = FanoutApi(server.base, API_KEY)
        await asyncio.to_thread(api.publish, "news", {"after": "restart"})
        await asyncio.to_thread(api.publish, "sport", text="goal")
        assert (await news.get(within=5)).data == {"after": "restart"}
        assert (await sport.get(within=5)).text == "goal"
        api.close()
    down = [c for c in changes if c.state is State.DISCONNECTED]
    assert down and down[0].code == 1012  # uvicorn's "restarting" close
    assert down[0].reconnect_in is not None


async def test_an_invalid_token_closes_the_client_for_good_without_reconnecting(
    start_server: StartServer,
) -> None:
    server = start_server(env=AUTH_ENV)
    changes: list[StateChange] = []
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return connection_token("7", 60, secret="not-the-servers-secret-but-long-enough")

    client = Client(server.ws("/ws"), get_token=get_token, on_state=changes.append)
    with pytest.raises(ClientClosed) as closed:
        await client.connect()
    assert closed.value.code == 4500
    await asyncio.sleep(1.0)  # time enough for a reconnect that must not happen
    assert client.state is State.CLOSED
    assert [c.state for c in changes].count(State.CONNECTING) == 1
    assert calls == 1
    with pytest.raises(ClientClosed):
        await client.publish("x", 1)
    await client.close()


async def test_the_token_is_refreshed_before_it_expires_and_the_socket_stays(
    start_server: StartServer,
) -> None:
    server = start_server(env=AUTH_ENV)
    issued: list[str] = []
    changes: list[StateChange] = []

    async def get_token() -> str:
        token = connection_token("7", 3, secret=SECRET)  # 3 s, closed at exp + 5 s
        issued.append(token)
        return token

    async with Client(server.ws("/ws"), get_token=get_token, on_state=changes.append) as c:
        assert c.user == "7"
        sub = await c.subscribe("sdk.refresh")
        await asyncio.sleep(10)  # past the first token's exp + leeway (8 s)
        assert c.state is State.CONNECTED
        await c.publish("sdk.refresh", "still here")
        assert (await sub.get(within=5)).data == "still here"
    assert len(issued) >= 3  # connect, then refreshes every ~2 s
    assert [ch.state for ch in changes].count(State.CONNECTED) == 1  # never dropped


async def test_without_get_token_an_expired_token_ends_the_client_with_4001(
    start_server: StartServer,
) -> None:
    server = start_server(env=AUTH_ENV)
    client = Client(server.ws("/ws"), token=connection_token("7", 1, secret=SECRET))
    await client.connect()
    assert await eventually(lambda: client.state is State.CLOSED, within=15)
    with pytest.raises(ClientClosed) as closed:
        await client.ping()
    assert closed.value.code == 4001
    await client.close()


HISTORY_RULES = """
[[channels]]
match = "hist.*"
subscribe = "any"
publish = "any"
history_size = 100
history_ttl = 600
"""


async def test_a_dropped_connection_recovers_what_was_published_meanwhile_from_history(
    start_server: StartServer, tmp_path: Path
) -> None:
    rules = tmp_path / "fanout.toml"
    rules.write_text(HISTORY_RULES)
    server = start_server(env={"FANOUT_API_KEYS": API_KEY, "FANOUT_CONFIG": str(rules)})
    api = FanoutApi(server.base, API_KEY)
    async with Client(server.ws("/ws"), min_delay=0.5, max_delay=1.0) as client:
        sub = await client.subscribe("hist.a")
        try:
            await client.history("hist.a")  # a subscriber may read it
        except CommandError as exc:
            if exc.code == 404:
                pytest.skip(f"the server has no history yet (history answered 404: {exc})")
            raise
        await asyncio.to_thread(api.publish, "hist.a", 1)
        assert (await sub.get(within=5)).data == 1
        ws = client._ws
        assert ws is not None
        ws.transport.abort()  # the network drops; the server still holds the channel
        for n in (2, 3):
            await asyncio.to_thread(api.publish, "hist.a", n)
        got = [await sub.get(within=10) for _ in range(2)]
        assert [p.data for p in got] == [2, 3]
        assert [p.offset for p in got] == [2, 3]
        with pytest.raises(TimeoutError):
            await sub.get(within=0.5)
    api.close()


def _children(pid: int) -> list[int]:
    """Pids of the processes whose parent is ``pid`` (a uvicorn supervisor's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after it.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _kill(server: ServerProcess) -> None:
    """SIGKILL the supervisor and each of its workers, by PID: a worker outlives its
    supervisor's death, and would keep serving the port."""
    assert server.proc is not None
    workers = _children(server.proc.pid)
    assert len(workers) >= 2, workers
    server.stop(signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_two_workers_killed_and_restarted_on_their_history_file_lose_nothing(
    tmp_path: Path, local_dir: Path
) -> None:
    rules = tmp_path / "fanout.toml"
    rules.write_text(HISTORY_RULES)
    env = {
        "FANOUT_API_KEYS": API_KEY,
        "FANOUT_CONFIG": str(rules),
        "FANOUT_HISTORY_FILE": str(tmp_path / "history.sqlite3"),
        "FANOUT_LOCAL_DIR": str(local_dir),
    }
    server = ServerProcess(env, ["--workers", "2"]).start()
    events: list[SubscriptionEvent] = []
    try:
        async with Client(server.ws("/ws"), min_delay=0.1, max_delay=0.5) as client:
            sub = await client.subscribe("hist.restart", on_event=events.append)
            async with AsyncFanoutApi(server.base, API_KEY) as api:
                epoch = (await api.publish("hist.restart", 1)).epoch
                await api.publish("hist.restart", 2)
            got = [await sub.get(within=5) for _ in range(2)]

            await asyncio.to_thread(_kill, server)
            assert await eventually(lambda: client.state is not State.CONNECTED, within=10)
            # Published while the client cannot reach its server: by another server on
            # the same history file (one process, its own port), stopped before the
            # client's server comes back.
            meanwhile = await asyncio.to_thread(ServerProcess(env).start)
            try:
                async with AsyncFanoutApi(meanwhile.base, API_KEY) as api:
                    missed = [await api.publish("hist.restart", n) for n in (3, 4)]
            finally:
                await asyncio.to_thread(meanwhile.stop)
            assert [(r.offset, r.epoch) for r in missed] == [(3, epoch), (4, epoch)]
            await asyncio.to_thread(_restart_on_same_port, server)

            got += [await sub.get(within=15) for _ in range(2)]
            async with AsyncFanoutApi(server.base, API_KEY) as api:
                await api.publish("hist.restart", 5)
            got.append(await sub.get(within=5))
            with pytest.raises(TimeoutError):  # no duplicate follows
                await sub.get(within=0.5)
    finally:
        server.stop()
    assert [(p.offset, p.data) for p in got] == [(n, n) for n in range(1, 6)]
    again = [e for e in events if isinstance(e, Subscribed) and e.resubscribed]
    assert len(again) == 1 and again[0].recovered is True
    assert again[0].position is not None and again[0].position.epoch == epoch
    assert not [e for e in events if isinstance(e, Gap)]
