"""Waiting for behaviour instead of sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; behaviour, not timing, is tested."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], within: float = 10.0, step: float = 0.05
) -> bool:
    """Await ``predicate`` (sync or async) until truthy or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result or time.monotonic() >= deadline:
            return bool(result)
        await asyncio.sleep(step)
