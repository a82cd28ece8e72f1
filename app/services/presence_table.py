"""Who is on which presence channel, as one worker knows it: its own clients and every other
worker's, kept apart by source (the worker that owns the member).

The table only stores and counts; :class:`~app.services.presence.PresenceService` decides
what goes in and what it means. Counts are kept as members come and go, so
``presence_stats`` and "is this user still here?" never walk a channel's members.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

import msgspec

_encode: Final = msgspec.json.Encoder().encode

NULL: Final = b"null"
"""The ``info`` of a member whose token had none (or who has no token)."""


class Member:
    """One client on one channel: its id, its user (``""`` anonymous) and its token's public
    ``info`` as JSON bytes. ``entry`` is its part of a ``presence`` answer,
    ``"client":{"user":..,"info":..}``, encoded once when the member is made."""

    __slots__ = ("client", "entry", "info", "user")

    def __init__(self, client: str, user: str, info: bytes = NULL) -> None:
        self.client = client
        self.user = user
        self.info = info
        self.entry = b'%b:{"user":%b,"info":%b}' % (_encode(client), _encode(user), info)

    def __repr__(self) -> str:
        return f"Member({self.client!r}, user={self.user!r})"


Roster = dict[str, Member]
"""A channel's members from one source, by client id."""


class PresenceTable:
    """Members by source (worker id), channel and client; counts by channel and user.

    ``max_members`` bounds what one source may hold on one channel: :meth:`add` refuses
    more, so memory per channel stays within sources x ``max_members``.
    """

    __slots__ = ("_clients", "_sizes", "_sources", "_users", "max_members")

    def __init__(self, max_members: int) -> None:
        self.max_members = max_members
        self._sources: dict[str, dict[str, Roster]] = {}
        self._sizes: dict[str, int] = {}
        """Members per source, every channel together."""
        self._clients: dict[str, int] = {}
        """Members per channel, every source together."""
        self._users: dict[str, dict[str, int]] = {}
        """Per channel, members per user (anonymous ones under ``""``)."""

    # -- changes ----------------------------------------------------------------------------

    def add(self, source: str, channel: str, member: Member) -> bool:
        """Put ``member`` on ``channel`` for ``source``; False when it was there already or
        the source's roster is full."""
        channels = self._sources.get(source)
        if channels is None:
            channels = self._sources[source] = {}
        roster = channels.get(channel)
        if roster is None:
            roster = channels[channel] = {}
        elif member.client in roster or len(roster) >= self.max_members:
            return False
        roster[member.client] = member
        self._counted(source, channel, member.user, 1)
        return True

    def remove(self, source: str, channel: str, client: str) -> Member | None:
        """Take ``client`` off ``channel`` for ``source``; the member, or None if absent."""
        channels = self._sources.get(source)
        if channels is None:
            return None
        roster = channels.get(channel)
        if roster is None:
            return None
        member = roster.pop(client, None)
        if member is None:
            return None
        if not roster:
            del channels[channel]
        self._counted(source, channel, member.user, -1)
        return member

    def replace(self, source: str, channels: dict[str, list[Member]]) -> list[tuple[str, Member]]:
        """Make ``source``'s members exactly ``channels`` (a digest); returns the members that
        were there and are not any more, as (channel, member)."""
        removed: list[tuple[str, Member]] = []
        old = self._sources.get(source, {})
        for channel, roster in list(old.items()):
            wanted = channels.get(channel)
            keep = {m.client for m in wanted} if wanted else set()
            for client in [c for c in roster if c not in keep]:
                member = self.remove(source, channel, client)
                assert member is not None
                removed.append((channel, member))
        for channel, members in channels.items():
            for member in members:
                self.add(source, channel, member)
        return removed

    def drop(self, source: str) -> list[tuple[str, Member]]:
        """Forget every member of ``source``; returns them as (channel, member)."""
        channels = self._sources.pop(source, None)
        if channels is None:
            return []
        removed = [(ch, m) for ch, roster in channels.items() for m in roster.values()]
        for channel, member in removed:
            self._counted(source, channel, member.user, -1)
        self._sizes.pop(source, None)
        return removed

    def _counted(self, source: str, channel: str, user: str, delta: int) -> None:
        self._sizes[source] = self._sizes.get(source, 0) + delta
        clients = self._clients.get(channel, 0) + delta
        users = self._users.get(channel)
        if users is None:
            users = self._users[channel] = {}
        count = users.get(user, 0) + delta
        if count:
            users[user] = count
        else:
            users.pop(user, None)
        if clients:
            self._clients[channel] = clients
        else:
            self._clients.pop(channel, None)
            self._users.pop(channel, None)

    # -- questions --------------------------------------------------------------------------

    def stats(self, channel: str) -> tuple[int, int]:
        """(clients, users) on ``channel``: every member, and the distinct non-empty user
        ids among them (anonymous clients are clients, not users)."""
        users = self._users.get(channel)
        if not users:
            return 0, 0
        return self._clients.get(channel, 0), len(users) - ("" in users)

    def has_user(self, channel: str, user: str) -> bool:
        """Whether any client of ``user`` is on ``channel``, from any source."""
        users = self._users.get(channel)
        return users is not None and user in users

    def entries(self, channel: str, limit: int) -> tuple[list[bytes], bool]:
        """Up to ``limit`` members' ``presence`` entries, and whether some were left out."""
        out: list[bytes] = []
        for channels in self._sources.values():
            roster = channels.get(channel)
            if not roster:
                continue
            room = limit - len(out)
            if len(roster) > room:
                out.extend(m.entry for _, m in zip(range(room), roster.values(), strict=False))
                return out, True
            out.extend(m.entry for m in roster.values())
        return out, False

    def holders(self, channel: str, user: str) -> Iterator[tuple[str, Member]]:
        """(source, member) for every client of ``user`` on ``channel``."""
        for source, channels in self._sources.items():
            roster = channels.get(channel)
            if roster:
                for member in roster.values():
                    if member.user == user:
                        yield source, member

    def channels_of(self, source: str) -> dict[str, Roster]:
        """``source``'s rosters by channel (the live dicts: do not change them)."""
        return self._sources.get(source, {})

    def size(self, source: str) -> int:
        """Members ``source`` holds, every channel together."""
        return self._sizes.get(source, 0)

    def sources(self) -> Iterable[str]:
        """The sources with at least one member."""
        return [s for s, n in self._sizes.items() if n]
