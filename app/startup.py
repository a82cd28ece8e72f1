"""Building the app as ``uvicorn app.main:app`` imports it: bad settings end the server.

Under ``--workers N`` every worker imports the app on its own, so a bad setting is found N
times; one worker speaks for all of them (an abstract Unix socket claim per supervisor)
and stops the supervisor, so the server exits with a non-zero status and one line.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from typing import NoReturn, TypeVar

from app.config import Settings, SettingsError, ignored_settings, unknown_variables

T = TypeVar("T")

STARTUP_FAILURE = 3
"""uvicorn's exit status for "could not start": its --workers supervisor stops on it."""


def build_or_exit(factory: Callable[[Settings], T], environ: Mapping[str, str] | None = None) -> T:
    """``factory(settings)`` with settings from the environment, as ``uvicorn app.main:app`` runs.

    A bad FANOUT_* value prints one line (variable, value, what is allowed) instead of a
    traceback, and the server exits with status 3, also under ``--workers`` (see
    :func:`_exit_bad_setting`). Unknown FANOUT_* variables get one warning line each, from
    one worker of a server, once the app's logging is configured.
    """
    env = os.environ if environ is None else environ
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        _exit_bad_setting(exc, env)
    try:
        built = factory(settings)
    except SettingsError as exc:  # what the factory loads from the settings (FANOUT_CONFIG)
        _exit_bad_setting(exc, env)
    warnings = [*unknown_variables(env), *ignored_settings(settings)]
    if warnings and _first_worker("warned"):
        for warning in warnings:
            logging.getLogger("fanout").warning("%s", warning)
    return built


def _exit_bad_setting(error: SettingsError, env: Mapping[str, str]) -> NoReturn:
    """Print ``error`` as one line and exit with status 3; under --workers, stop the server.

    uvicorn 0.54's supervisor stops when a worker exits with 3, but then exits with status 0,
    which a process manager reads as a clean stop; and every worker would print the same
    line. So under uvicorn's supervisor one worker (the first to fail) prints the line and
    ends the supervisor with SIGKILL (exit status 137: the only way to make it non-zero
    from a worker); its siblings fail the same way and exit quietly.
    """
    supervisor = uvicorn_supervisor()
    if supervisor is None or (_first_worker("failed") and supervisor.is_alive()):
        from app.logging_setup import format_line

        json_lines = env.get("FANOUT_LOG_FORMAT", "").strip().lower() == "json"
        print(format_line(logging.ERROR, str(error), json_lines=json_lines), file=sys.stderr)
        sys.stderr.flush()
        if supervisor is not None and supervisor.pid is not None:
            os.kill(supervisor.pid, signal.SIGKILL)
            supervisor.join(5.0)  # so a sibling that fails later finds it gone and stays quiet
    sys.exit(STARTUP_FAILURE)


def uvicorn_supervisor() -> multiprocessing.process.BaseProcess | None:
    """The uvicorn --workers supervisor this process is a worker of, if it is one."""
    parent = multiprocessing.parent_process()
    if parent is None or "uvicorn.supervisors.multiprocess" not in sys.modules:
        return None
    return parent


def _first_worker(what: str) -> bool:
    """Whether this process is the first of its supervisor's workers to claim ``what``.

    The claim is an abstract Unix socket name (Linux) held until the process exits. Not
    a worker of a supervisor, or no abstract sockets (macOS): always the first.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return True
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0fanout-{what}-{parent.pid}")
    except OSError as exc:
        claim.close()
        return exc.errno != errno.EADDRINUSE
    # The claim lasts until the process exits: its descriptor is left open on purpose, owned
    # by no object that could close it.
    claim.detach()
    return True
