"""SIGTERM under uvicorn: drain first, then let uvicorn shut down as it always does.

uvicorn 0.54 (``Server.capture_signals``) installs ``Server.handle_exit`` for SIGINT and
SIGTERM with ``signal.signal`` before the lifespan starts. ``handle_exit`` only sets
``should_exit``; the main loop notices it within 0.1 s and ``Server.shutdown`` then closes
the listening sockets, calls ``shutdown()`` on every connection (a WebSocket gets 1012 with
no reason, every one in the same instant), waits up to ``--timeout-graceful-shutdown`` for
connections and tasks to end, and only then runs the lifespan shutdown. By then every
socket is gone: the lifespan is too late to pace anything, and nothing in between calls
the application.

So the lifespan wraps uvicorn's SIGTERM handler (:func:`drain_on_sigterm`): the first
SIGTERM starts the application's drain, and uvicorn's own handler is called once the drain
is done; uvicorn's shutdown then finds no socket left and goes on as usual (including its
re-raise of the signal, so a single process still ends with SIGTERM's status; a
``--workers`` supervisor exits 0). A second SIGTERM during the drain calls uvicorn's
handler at once (uvicorn then closes what is left with its plain 1012), and so does a
SIGTERM once uvicorn is already stopping. SIGINT (Ctrl-C) is left to uvicorn: stopping at
once is what a developer at a terminal wants (with ``--workers``, Ctrl-C reaches every
worker as SIGINT, and the SIGTERM the supervisor sends next finds them stopping).

``--timeout-graceful-shutdown`` only starts counting once uvicorn's handler ran, so it
would not bound the drain; the drain window is therefore capped at it where it is set (see
:attr:`SigtermHook.graceful_timeout`).

Anywhere else (another ASGI server, uvicorn run outside the main thread, a handler that is
not uvicorn's) nothing is installed and SIGTERM does what that server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any]


def _uvicorn_server(handler: object) -> Any | None:
    """The uvicorn ``Server`` whose ``handle_exit`` ``handler`` is, else None."""
    server = getattr(handler, "__self__", None)
    if (
        getattr(handler, "__name__", None) == "handle_exit"
        and type(server).__module__.startswith("uvicorn.")
        and hasattr(server, "should_exit")
    ):
        return server
    return None


@dataclass
class SigtermHook:
    """The installed SIGTERM handler; :meth:`remove` puts uvicorn's back."""

    graceful_timeout: float | None
    """uvicorn's ``--timeout-graceful-shutdown`` (None when unset)."""
    _handler: Handler
    _previous: Handler
    _task: asyncio.Task[None] | None = None

    def remove(self) -> None:
        """Restore uvicorn's handler (if ours is still the installed one)."""
        with contextlib.suppress(ValueError):  # not the main thread any more
            if signal.getsignal(signal.SIGTERM) is self._handler:
                signal.signal(signal.SIGTERM, self._previous)


def drain_on_sigterm(drain: Callable[[float | None], Awaitable[None]]) -> SigtermHook | None:
    """Wrap uvicorn's SIGTERM handler: the first SIGTERM awaits ``drain(graceful_timeout)``
    on the running loop, then calls uvicorn's handler. None where uvicorn's handler is not
    the installed one (nothing is changed then)."""
    previous = signal.getsignal(signal.SIGTERM)
    server = _uvicorn_server(previous)
    if server is None or not callable(previous):
        return None
    loop = asyncio.get_running_loop()
    config = getattr(server, "config", None)
    timeout = getattr(config, "timeout_graceful_shutdown", None)
    graceful = float(timeout) if isinstance(timeout, int | float) else None
    chained = False

    def chain() -> None:
        nonlocal chained
        if not chained:
            chained = True
            previous(signal.SIGTERM, None)

    async def drain_then_chain() -> None:
        try:
            await drain(graceful)
        finally:
            chain()

    def start() -> None:
        if hook._task is None:
            hook._task = loop.create_task(drain_then_chain(), name="fanout-sigterm-drain")

    def handler(sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of whatever the main thread was
        # doing, the event loop included: hand the work to the loop, do nothing here.
        if hook._task is None and not server.should_exit:
            loop.call_soon_threadsafe(start)
        else:  # a second SIGTERM, or uvicorn is already stopping (SIGINT): no drain
            loop.call_soon_threadsafe(chain)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals are not ours to handle
        return None
    hook = SigtermHook(graceful, handler, previous)
    return hook
