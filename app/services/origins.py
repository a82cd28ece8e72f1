"""OriginPolicy: which web pages may open a socket (FANOUT_ALLOWED_ORIGINS).

A browser sends the page's origin (``scheme://host[:port]``) with every WebSocket handshake
and, unlike for ``fetch``, enforces nothing itself: any page on the internet may open a socket
to Fanout with the visitor's cookies (cross-site WebSocket hijacking). The policy is checked
once per handshake, before accept; nothing here runs per message.

An allowed origin is exact (``https://app.example.com``, ``http://localhost:8080``) or a
wildcard for the subdomains of one domain (``https://*.example.com``: one or more labels before
``example.com``, not ``example.com`` itself). Scheme and port are always exact; a default port
(80 for http, 443 for https) may be written or left out. Hosts compare case-insensitively.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")
_HOST = re.compile(r"[a-z0-9_.-]+|\[[0-9a-f:.]+\]")

Origin = tuple[str, str, int | None]
"""(scheme, host, port) with the host lowercased and a default port as None."""


class OriginPolicy:
    """Decides, from a handshake's ``Origin`` header, whether the socket may open.

    Built once from the settings (:meth:`from_setting`); :meth:`allows` is called per handshake.
    With no allowed origins every origin passes (Fanout's behaviour before the setting); a
    handshake without an ``Origin`` header (a non-browser client) passes unless
    ``require`` is set.
    """

    __slots__ = ("_exact", "_require", "_wildcards")

    def __init__(
        self, exact: frozenset[Origin], wildcards: tuple[Origin, ...], *, require: bool
    ) -> None:
        self._exact = exact
        self._wildcards = wildcards  # (scheme, ".example.com", port)
        self._require = require

    @classmethod
    def from_setting(cls, allowed: str, *, require: bool = False) -> OriginPolicy:
        """Parse FANOUT_ALLOWED_ORIGINS (comma separated); ValueError names the bad entry."""
        exact: set[Origin] = set()
        wildcards: list[Origin] = []
        for entry in (part.strip() for part in allowed.split(",")):
            if not entry:
                continue
            scheme, host, port = _parse_entry(entry)
            if host.startswith("*."):
                wildcards.append((scheme, host[1:], port))
            else:
                exact.add((scheme, host, port))
        return cls(frozenset(exact), tuple(wildcards), require=require)

    @property
    def restricts(self) -> bool:
        """Whether any handshake can be refused (a list is set, or an Origin is required)."""
        return bool(self._exact or self._wildcards or self._require)

    def allows(self, origin: str | None) -> bool:
        """Whether a handshake whose ``Origin`` header is ``origin`` (None: absent) may open."""
        if origin is None:
            return not self._require
        if not (self._exact or self._wildcards):
            return True
        parsed = parse_origin(origin)
        if parsed is None:  # "null" (sandboxed frames, file: pages) or garbage
            return False
        if parsed in self._exact:
            return True
        scheme, host, port = parsed
        return any(
            scheme == w_scheme and port == w_port and host.endswith(suffix)
            for w_scheme, suffix, w_port in self._wildcards
        )


def parse_origin(origin: str) -> Origin | None:
    """An ``Origin`` header as (scheme, host, port), or None if it is not a plain origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:  # a port out of range, a broken IPv6 literal
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if parts.hostname and ":" in parts.hostname:
        host = f"[{host}]"
    if (
        not _SCHEME.fullmatch(scheme)
        or not _HOST.fullmatch(host)
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or not origin.strip().lower().startswith(f"{scheme}://")
    ):
        return None
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, host, port


def _parse_entry(entry: str) -> Origin:
    entry = entry.removesuffix("/")  # "https://app.example.com/" as people copy it
    if entry == "*":
        raise ValueError("'*': leave the setting empty to allow every origin")
    wildcard = "://*." in entry
    if "*" in (entry.replace("://*.", "://", 1) if wildcard else entry):
        raise ValueError(f"{entry!r}: a wildcard is only allowed as the first label ('*.')")
    parsed = parse_origin(entry.replace("://*.", "://wildcard.", 1) if wildcard else entry)
    if parsed is None:
        raise ValueError(
            f"{entry!r} is not an origin; expected scheme://host[:port] (no path), e.g."
            " https://app.example.com or https://*.example.com"
        )
    scheme, host, port = parsed
    if wildcard:
        domain = host.removeprefix("wildcard.")
        if not all(_LABEL.fullmatch(label) for label in domain.split(".")):
            raise ValueError(f"{entry!r}: expected a domain after '*.', e.g. https://*.example.com")
        host = f"*.{domain}"
    return scheme, host, port
