"""BroadcastService: the worker's registry of connections and fan-out by channel."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Protocol

from starlette.websockets import WebSocket

from app.config import Settings
from app.server.socket import ServerSocket
from app.services.asgi_connection import AsgiConnection
from app.services.backends import Backend
from app.services.close_codes import CloseCode
from app.services.connection import Connection, OutboxLimits
from app.services.direct_connection import Cork, DirectConnection
from app.services.limits import AddressLimit, address_of
from app.services.message import Message
from app.services.protocol.encode import encode_gap
from app.services.stats import StatsService

GAP_NOTICE_TYPE = "fanout.gap"
"""``type`` of the text message subscribers get when the backend may have lost messages."""


class Member(Protocol):
    """What fan-out offers a message to: a connection, or a history channel's
    :class:`~app.services.history.subscription.HistorySubscription` in front of one."""

    def offer(self, message: Message) -> bool:
        """Queue ``message`` without waiting; False if it was not queued."""


ChannelTable = dict[str, dict[int, Member]]
"""Members by channel, each channel's members by connection id."""


class BroadcastService:
    """Tracks this worker's WebSocket connections and fans messages out to them.

    Connections are keyed by channel (``/ws/broadcast`` is the ``default`` channel); echo
    connections are tracked but belong to no channel. ``publish`` delivers to local
    subscribers at once and hands the message to the backend for every other worker.
    Everything it counts or logs goes through the :class:`StatsService`.
    """

    def __init__(self, settings: Settings, backend: Backend, stats: StatsService) -> None:
        self.settings = settings
        self.backend = backend
        self.stats = stats
        self._limits = OutboxLimits(
            max_messages=settings.outbox_max_messages,
            max_bytes=settings.outbox_max_bytes,
            close_timeout=settings.close_timeout,
        )
        self._ids = itertools.count(1)
        self._connections: dict[int, Connection] = {}
        # A dict per channel keeps delivery order stable and removal O(1). Raw sockets
        # (one channel each, raw frames) and fanout.v1 subscribers (envelopes) apart, so
        # each kind's frame is built once and the raw loop has no per-socket test.
        self._channels: ChannelTable = {}
        self._subscribers: ChannelTable = {}
        self.subscriptions = 0
        """fanout.v1 subscriptions on this worker (a socket with three channels counts 3)."""
        self._cork = Cork(stats.write_latency)
        self.addresses = AddressLimit(settings.max_connections_per_ip)
        """Sockets per client address (FANOUT_MAX_CONNECTIONS_PER_IP; empty when off)."""

    # -- connections -----------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Open WebSocket connections on this worker."""
        return len(self._connections)

    def connections(self) -> list[Connection]:
        """This worker's registered connections (a copy), oldest first."""
        return list(self._connections.values())

    def has_capacity(self) -> bool:
        """Whether one more connection fits under FANOUT_MAX_CONNECTIONS."""
        limit = self.settings.max_connections
        return limit == 0 or len(self._connections) < limit

    def connect(
        self, websocket: WebSocket, *, endpoint: str, channel: str | None, peer: str | None = None
    ) -> Connection:
        """Register a client (before its handshake completes) and return its Connection;
        ``peer`` is its address as :func:`peer_of` gives it, when the caller has it already.

        The connection writes straight to the transport where the server allows it and
        FANOUT_DIRECT_WRITES is on, through ASGI otherwise.
        """
        server_socket = ServerSocket(websocket.scope)
        server_socket.before_accept()  # before direct_writer(), which keeps .writable
        direct = server_socket.direct_writer() if self.settings.direct_writes else None
        common = {
            "conn_id": next(self._ids),
            "endpoint": endpoint,
            "channel": channel,
            "peer": peer if peer is not None else peer_of(websocket),
            "send": websocket.send,
            "socket": server_socket,
            "limits": self._limits,
            "counters": self.stats.counters,
            "on_overflow": self.stats.slow_consumer,
        }
        conn: Connection
        if direct is not None:
            conn = DirectConnection(direct=direct, cork=self._cork, **common)
        else:
            conn = AsgiConnection(**common)
        self._connections[conn.id] = conn
        self.addresses.add(address_of(conn.peer))
        if channel is not None:
            self._join(self._channels, channel, conn)
        self.stats.opened(conn)
        return conn

    async def disconnect(self, conn: Connection, code: int) -> None:
        """Forget a client whose session ended with ``code`` and release what it held."""
        if self._connections.pop(conn.id, None) is None:
            return
        self.addresses.remove(address_of(conn.peer))
        if conn.channel is not None:
            self._leave(self._channels, conn.channel, conn)
        self.stats.closed(conn, conn.close_code if conn.close_code is not None else code)
        await conn.finish()

    async def close_all(self) -> None:
        """Close every remaining connection with 1001 and wait for each to finish."""
        remaining = list(self._connections.values())
        for conn in remaining:
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        await asyncio.gather(*(conn.finish() for conn in remaining))

    def subscribe(self, conn: Connection, channel: str, member: Member | None = None) -> bool:
        """Add a fanout.v1 subscription; False if ``conn`` already holds ``channel``.

        ``member`` stands in for ``conn`` in the channel's fan-out (a history channel's
        subscription filters and holds publications for its connection)."""
        members = self._subscribers.get(channel)
        if members is not None and conn.id in members:
            return False
        self._join(self._subscribers, channel, conn, member)
        self.subscriptions += 1
        return True

    def unsubscribe(self, conn: Connection, channel: str) -> bool:
        """End a fanout.v1 subscription; False if ``conn`` did not hold ``channel``."""
        members = self._subscribers.get(channel)
        if members is None or conn.id not in members:
            return False
        self._leave(self._subscribers, channel, conn)
        self.subscriptions -= 1
        return True

    def is_subscribed(self, conn: Connection, channel: str) -> bool:
        """Whether ``conn`` holds a fanout.v1 subscription to ``channel``."""
        members = self._subscribers.get(channel)
        return members is not None and conn.id in members

    def client_id(self, conn: Connection) -> str:
        """``conn``'s client id (fanout.v1 ``connect``, presence, log lines)."""
        return self.stats.client_id(conn)

    def channel_sizes(self) -> dict[str, int]:
        """Subscribers per channel on this worker, raw sockets and fanout.v1 together."""
        sizes = {name: len(members) for name, members in self._channels.items()}
        for name, members in self._subscribers.items():
            sizes[name] = sizes.get(name, 0) + len(members)
        return sizes

    def channel_names(self) -> list[str]:
        """Every channel with a local socket on it, raw or fanout.v1."""
        return list({*self._channels, *self._subscribers})

    def has_members(self, channel: str) -> bool:
        """Whether any local socket, raw or fanout.v1, is on ``channel``."""
        return channel in self._channels or channel in self._subscribers

    def _join(
        self, table: ChannelTable, channel: str, conn: Connection, member: Member | None = None
    ) -> None:
        members = table.get(channel)
        if members is None:
            members = table[channel] = {}
            if channel not in self._channels or channel not in self._subscribers:
                self.backend.subscribe(channel)  # the channel's first member of any kind
        members[conn.id] = conn if member is None else member

    def _leave(self, table: ChannelTable, channel: str, conn: Connection) -> None:
        members = table.get(channel)
        if members is None:
            return
        members.pop(conn.id, None)
        if not members:
            del table[channel]
            if channel not in self._channels and channel not in self._subscribers:
                self.backend.unsubscribe(channel)  # its last member of any kind left

    # -- messages --------------------------------------------------------------------------

    def publish(self, channel: str, message: Message) -> None:
        """Deliver ``message`` to this worker's subscribers and hand it to the backend."""
        self.deliver(channel, message)
        self.backend.publish(channel, message)

    def deliver(self, channel: str, message: Message) -> None:
        """Offer ``message`` to every local subscriber of ``channel``; never waits."""
        # No copy of the members: offer() never awaits and never changes the registry (a slow
        # consumer only starts closing; it leaves when its session ends). The cork may write
        # the first subscribers while later ones are still offered the message.
        cork = self._cork
        cork.begin()
        try:
            members = self._channels.get(channel)
            if members and not message.is_event:  # events (join, leave) are fanout.v1 only
                for conn in members.values():
                    conn.offer(message)
            subscribers = self._subscribers.get(channel)
            if subscribers:
                envelope = message.envelope(channel)
                for conn in subscribers.values():
                    conn.offer(envelope)
        finally:
            cork.end()

    def gap(
        self, reason: str, channel: str | None = None, /, exclude: frozenset[str] = frozenset()
    ) -> None:
        """Tell local subscribers that messages from elsewhere may have been missed: those of
        ``channel``, or every one (but those of ``exclude``) when it is None."""
        if channel is None:
            groups = [m for name, m in self._channels.items() if name not in exclude]
        else:
            members = self._channels.get(channel)
            groups = [members] if members else []
        notice = Message.from_text(
            json.dumps({"type": GAP_NOTICE_TYPE, "reason": reason}, separators=(",", ":"))
        )
        raw = sum(len(m) for m in groups)
        if channel is None:
            events = [(n, m) for n, m in self._subscribers.items() if n not in exclude]
        else:
            subscribers = self._subscribers.get(channel)
            events = [(channel, subscribers)] if subscribers else []
        self.stats.gap(reason, raw + sum(len(s) for _, s in events), channel)
        for group in groups:
            for conn in group.values():
                conn.offer(notice)
        for name, subscribers in events:
            event = Message.from_utf8(encode_gap(name, reason))
            for conn in subscribers.values():
                conn.offer(event)


def peer_of(websocket: WebSocket) -> str:
    """The client's address as log lines show it."""
    # The scope's tuple, not Starlette's ``client``, which builds an Address for each read.
    client = websocket.scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"
