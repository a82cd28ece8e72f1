"""Reading a server's /stats from async tests, and the predicates the tests wait on."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.servers import ServerProcess


async def fetch_stats(server: ServerProcess) -> dict[str, Any]:
    """/stats without blocking the test's event loop."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(f"{server.base}/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def workers_linked(server: ServerProcess, workers: int) -> bool:
    """Whether /stats lists ``workers`` workers, each linked to every other one (local://;
    a backend without links, Redis, reports no ``peers``)."""
    listed = (await fetch_stats(server))["workers"]
    return len(listed) == workers and all(
        w["backend"].get("peers", workers - 1) == workers - 1 for w in listed
    )


async def total_is(server: ServerProcess, expected: int) -> bool:
    """Whether /stats counts exactly ``expected`` open connections."""
    return bool((await fetch_stats(server))["connections"]["total"] == expected)


async def channel_has(server: ServerProcess, channel: str, expected: int) -> bool:
    """Whether /stats counts exactly ``expected`` subscribers on ``channel``."""
    return bool((await fetch_stats(server))["channels"].get(channel, 0) == expected)
