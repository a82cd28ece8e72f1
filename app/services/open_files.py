"""The worker's open-file limit: every WebSocket holds one descriptor, so the soft limit
(often 1,024 by default) caps connections long before memory does."""

from __future__ import annotations

import logging
import resource

from app.logging_setup import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

SPARE_FILES = 256
"""Descriptors a worker needs besides its WebSockets: the listening socket, the backend's
sockets, log files, SQLite stores, and connections still in their handshake."""


def raise_open_file_limit(max_connections: int) -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit and return it.

    Any process may raise its soft limit up to the hard one; only the operator (``ulimit
    -Hn`` in the starting shell, ``LimitNOFILE=`` for systemd, ``--ulimit nofile=`` for
    Docker) can raise the hard one. A warning says so when the limit cannot hold
    ``max_connections`` (FANOUT_MAX_CONNECTIONS; 0 means no limit, so nothing to check).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:  # a sandbox may refuse even this
            logger.warning("could not raise the open-file limit from %d: %s", soft, exc)
    needed = max_connections + SPARE_FILES
    if max_connections and soft < needed:
        logger.warning(
            "open-file limit %d holds fewer than FANOUT_MAX_CONNECTIONS=%d sockets; raise the"
            " hard limit where the server starts (ulimit -n %d, systemd LimitNOFILE=%d)",
            soft,
            max_connections,
            needed,
            needed,
        )
    return soft
