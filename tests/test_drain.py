"""Graceful drain on real servers: SIGTERM and POST /api/drain, one worker and two.

Timing bounds are generous on purpose (the machine is shared): the closes must be spread
over the window, not land at exact instants.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support.rawws import OP_CLOSE, RawClient
from tests.support.servers import ServerProcess, StartServer
from tests.support.waiting import eventually

KEY = "drain-admin-key_0123456789"
KEYED = {"X-Admin-Key": KEY}
Client = websockets.ClientConnection


async def open_raw(server: ServerProcess, count: int) -> list[RawClient]:
    """``count`` raw sockets on /ws/broadcast, opened 50 at a time."""
    clients: list[RawClient] = []
    while len(clients) < count:
        batch = min(50, count - len(clients))
        clients += await asyncio.gather(
            *(RawClient.open(server.port, "/ws/broadcast") for _ in range(batch))
        )
    assert all(c.status == 101 for c in clients)
    return clients


async def closed_at(client: RawClient) -> tuple[float, int | None, str]:
    """When the server's close frame arrived, its code and its reason; answers the close."""
    _, frame = await client.recv_until_close()
    at = time.monotonic()
    if frame is None:
        return at, None, ""
    await client.send(OP_CLOSE, frame.payload[:2])
    await client.close()
    return at, frame.close_code, frame.payload[2:].decode()


def hint_of(reason: str) -> int:
    """The ``reconnect_after_ms`` of a 1012 close reason."""
    hint = json.loads(reason)["reconnect_after_ms"]
    assert isinstance(hint, int)
    return hint


def retry_after(client: RawClient) -> int:
    for line in client.response_head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "retry-after":
            return int(value.strip())
    raise AssertionError(f"no Retry-After in {client.response_head!r}")


async def get(server: ServerProcess, path: str, headers: dict[str, str] | None = None) -> Any:
    async with httpx.AsyncClient(timeout=5.0) as http:
        return await http.get(f"{server.base}{path}", headers=headers)


async def post_drain(server: ServerProcess, headers: dict[str, str] | None = None) -> Any:
    async with httpx.AsyncClient(timeout=5.0) as http:
        return await http.post(f"{server.base}/api/drain", headers=headers)


def assert_clean_log(server: ServerProcess) -> None:
    log = server.log()
    assert "ERROR" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "Task was destroyed but it is pending" not in log


async def test_sigterm_drains_500_clients_with_1012_and_hints_spread_over_the_window(
    start_server: StartServer,
) -> None:
    server = start_server({"FANOUT_DRAIN_SECONDS": "3", "FANOUT_ADMIN_KEY": KEY})
    clients = await open_raw(server, 500)

    async def counted() -> bool:
        stats = (await get(server, "/stats", KEYED)).json()
        return bool(stats["connections"]["total"] == 500)

    assert await eventually(counted, within=20)
    closes = [asyncio.create_task(closed_at(c)) for c in clients]

    # /healthz, polled one request after another from before the signal: every 200 must
    # have been asked for before the first close arrived.
    answers: list[tuple[float, int]] = []
    polling = True

    async def poll_health() -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            while polling:
                sent = time.monotonic()
                answers.append((sent, (await http.get(f"{server.base}/healthz")).status_code))

    poller = asyncio.create_task(poll_health())
    await eventually(lambda: len(answers) >= 3)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)

    # A handshake during the drain is refused with 503 and a Retry-After.
    assert await eventually(lambda: any(status == 503 for _, status in answers), within=5)
    late = await RawClient.open(server.port, "/ws/broadcast")
    assert late.status == 503
    assert retry_after(late) >= 1
    await late.close()

    results = await asyncio.wait_for(asyncio.gather(*closes), 30)
    polling = False
    await poller
    status = await asyncio.to_thread(server.proc.wait, 30)

    codes = {code for _, code, _ in results}
    assert codes == {1012}
    hints = [hint_of(reason) for _, _, reason in results]
    assert min(hints) >= 1000 and max(hints) <= 4000 + 1
    assert max(hints) - min(hints) > 1000  # jittered, not one value for all

    times = sorted(at for at, _, _ in results)
    assert times[-1] - times[0] >= 1.5, f"closes spread over {times[-1] - times[0]:.2f} s"
    busiest = max(sum(1 for t in times if start <= t < start + 0.5) for start in times)
    assert busiest <= 500 // 3, f"{busiest} closes in one 0.5 s slice"

    last_ok = max((sent for sent, code in answers if code == 200), default=0.0)
    assert last_ok < times[0], "a /healthz asked after the first close still answered 200"
    # uvicorn re-raises SIGTERM after its graceful shutdown: the status is the signal's own.
    assert status in (0, -signal.SIGTERM), server.log()[-2000:]
    log = server.log()
    assert "draining (SIGTERM): closing 500 connection(s) with 1012 over 3 s" in log
    assert "drained (SIGTERM): 500 connection(s) closed" in log
    assert "rejected /ws/broadcast from 127.0.0.1" in log
    assert "Application shutdown complete" in log
    assert_clean_log(server)
    spread = times[-1] - times[0]
    print(
        f"\n500 clients, FANOUT_DRAIN_SECONDS=3: closes over {spread:.2f} s, busiest 0.5 s: "
        f"{busiest}, hints {min(hints)}-{max(hints)} ms, process ended {status}"
    )


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
async def test_post_api_drain_with_the_key_drains_and_keeps_running_until_sigterm(
    start_server: StartServer, ws: str
) -> None:
    args = ["--ws", "wsproto"] if ws == "wsproto" else []
    server = start_server({"FANOUT_DRAIN_SECONDS": "1", "FANOUT_ADMIN_KEY": KEY}, args)
    clients = [await websockets.connect(server.ws("/ws/broadcast")) for _ in range(30)]

    for headers in (None, {"X-Admin-Key": "wrong"}):
        refused = await post_drain(server, headers)
        assert refused.status_code == 401
    assert (await get(server, "/healthz")).status_code == 200

    answer = await post_drain(server, {"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 202
    assert answer.json() == {
        "result": {"draining": True, "started": True, "drain_seconds": 1.0, "connections": 30}
    }
    health = await get(server, "/healthz")
    assert health.status_code == 503 and health.json()["status"] == "draining"
    for ws_client in clients:
        await asyncio.wait_for(ws_client.wait_closed(), 10)
        assert ws_client.close_code == 1012
        assert ws_client.close_reason is not None
        assert 1000 <= hint_of(ws_client.close_reason) <= 2001

    with pytest.raises(websockets.InvalidStatus) as refused_handshake:
        await websockets.connect(server.ws("/ws/broadcast"))
    assert refused_handshake.value.response.status_code == 503
    assert int(refused_handshake.value.response.headers["Retry-After"]) >= 1

    again = await post_drain(server, KEYED)
    assert again.status_code == 202 and again.json()["result"]["started"] is False

    # Drained, the process keeps running (and refusing) until it is stopped.
    await asyncio.sleep(0.5)
    assert (await get(server, "/healthz")).status_code == 503
    stats = (await get(server, "/stats", KEYED)).json()
    assert stats["worker"]["draining"] is True
    assert [w["draining"] for w in stats["workers"]] == [True]
    assert stats["drained"] == 30 and stats["workers"][0]["drained"] == 30
    assert stats["closes"]["1012"] == 30
    assert stats["rejected"]["draining"] == 1
    assert stats["connections"]["total"] == 0
    metrics = (await get(server, "/metrics", KEYED)).text
    assert "fanout_draining{" in metrics and "} 1.0" in metrics.split("fanout_draining{")[1]
    assert "fanout_drained_connections_total{" in metrics

    began = time.monotonic()
    status = server.stop()
    assert time.monotonic() - began < 5, "SIGTERM after a finished drain does not drain again"
    assert status in (0, -signal.SIGTERM)
    assert_clean_log(server)


async def test_post_api_drain_is_disabled_without_an_admin_key(start_server: StartServer) -> None:
    server = start_server({"FANOUT_DRAIN_SECONDS": "1"})
    async with websockets.connect(server.ws("/ws/echo")) as ws:
        refused = await post_drain(server, KEYED)
        assert refused.status_code == 403
        assert "FANOUT_ADMIN_KEY" in refused.json()["error"]["message"]
        assert (await get(server, "/healthz")).status_code == 200
        await ws.send("still here")
        assert await ws.recv() == "still here"
    async with httpx.AsyncClient(timeout=5.0) as http:
        assert (await http.get(f"{server.base}/api/drain")).status_code == 405


async def test_post_api_drain_to_one_of_two_workers_drains_both(
    start_server: StartServer, local_dir: Path
) -> None:
    env = {
        "FANOUT_DRAIN_SECONDS": "1",
        "FANOUT_ADMIN_KEY": KEY,
        "FANOUT_LOCAL_DIR": str(local_dir),
        "FANOUT_HEARTBEAT_INTERVAL": "0.25",
        "FANOUT_HEARTBEAT_EXPIRY": "1.5",
    }
    server = start_server(env, ["--workers", "2"])

    async def linked() -> bool:
        stats = (await get(server, "/stats", KEYED)).json()
        return len(stats["workers"]) == 2 and all(
            w["backend"]["peers"] == 1 and w["backend"]["inbound"] == 1 for w in stats["workers"]
        )

    assert await eventually(linked, within=20)
    clients: list[Client] = []
    spread: dict[int, int] = {}

    async def on_both() -> bool:
        stats = (await get(server, "/stats", KEYED)).json()
        spread.clear()
        spread.update({w["pid"]: w["connections"] for w in stats["workers"]})
        return sum(spread.values()) == len(clients) and min(spread.values()) >= 1

    while not await eventually(on_both, within=2):
        assert len(clients) < 200, f"not on both workers: {spread}"
        clients += [await websockets.connect(server.ws("/ws/broadcast")) for _ in range(4)]

    assert (await post_drain(server, KEYED)).status_code == 202
    for client in clients:
        await asyncio.wait_for(client.wait_closed(), 10)
        assert client.close_code == 1012
        assert client.close_reason is not None and hint_of(client.close_reason) >= 1000

    async def both_drained() -> bool:
        stats = (await get(server, "/stats", KEYED)).json()
        workers = {w["pid"]: (w["draining"], w["drained"]) for w in stats["workers"]}
        return workers == {pid: (True, n) for pid, n in spread.items()}

    assert await eventually(both_drained, within=10), spread
    # Whichever worker answers (a new connection each time), it is draining.
    for _ in range(10):
        assert (await get(server, "/healthz")).status_code == 503
    assert server.stop() == 0  # the --workers supervisor exits 0
    log = server.log()
    assert "draining (POST /api/drain)" in log
    assert "draining (told by worker " in log
    assert_clean_log(server)
