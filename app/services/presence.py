"""PresenceService: who is on each presence channel, cluster-wide, answered from memory.

Each worker owns the presence of its own fanout.v1 subscriptions on channels whose rule
says ``presence = true`` and shares it over the backend's control channel
(:mod:`app.services.presence_wire`): the changes batched every :data:`FLUSH_INTERVAL`, and a
digest of all its members every heartbeat interval. Every worker keeps every other's
members (a :class:`~app.services.presence_table.PresenceTable`), so ``presence`` and
``presence_stats`` never leave the process. A worker not heard from for the heartbeat expiry
is dropped with its members; one that stops says so.

Join and leave events (rule ``join_leave = true``) are per user for authenticated users, as
Pusher's member_added/member_removed are: a ``join`` when a user's first client arrives on
the channel, a ``leave`` when the last one has been gone for the rule's
``presence_leave_grace``. A departure is remembered on every worker (a :class:`Departure`),
so the same user subscribing again within the grace, on any worker, makes neither a leave
nor a join. Anonymous clients (user ``""``) cannot be recognised after a reconnect: each is
its own member, joins and leaves at once.

Who sends an event: the worker whose client caused it, through the backend like a
publication (framed once per worker, fanout.v1 subscribers only). A join goes out right
after the batch that announces its member (so within 100 ms): every worker that delivers
a join knows the member, and tells its leave even if the member's worker dies at once.
The leave of a departure is sent by the worker that stamped it last, ``(wall time,
worker id)``, so two workers whose last clients of a user left at nearly the same time
do not both send it; that worker then tells the others (a ``left`` op, sent after the
leave itself), and a worker holding a client of that user the sender had not heard of yet
answers with a ``join``: the subscribers' view ends up right. The members of a worker
that died (or stopped) are handled by every other worker for its own subscribers only,
after the grace: nobody is left to send them for everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Final

import msgspec

from app.logging_setup import LOGGER_NAME
from app.services.message import Message
from app.services.presence_table import NULL, Member, PresenceTable
from app.services.presence_wire import (
    Add,
    Bye,
    Delta,
    Digest,
    Entry,
    Left,
    Op,
    Remove,
    decode,
    encode,
)
from app.services.protocol.encode import encode_join, encode_leave
from app.services.rules import ChannelRules
from app.services.tokens import Identity

logger = logging.getLogger(LOGGER_NAME)

FLUSH_INTERVAL: Final = 0.1
"""Seconds between two batches of changes sent to the other workers (at most)."""
MAX_BATCH_OPS: Final = 1000
"""Changes one batch holds. Past it the batch is dropped and a digest sent instead (the
dropped batch still uses its sequence number, so receivers see the gap and take the
digest whole)."""
MAX_ORIGINS: Final = 4096
"""Other workers whose presence is kept (as the cluster view's MAX_PEERS)."""
MAX_DEPARTURES: Final = 100_000
"""Departures remembered at once; past it the oldest are forgotten without an event."""
TAKEOVER_MARGIN: Final = 0.5
"""Extra seconds before a worker sends, to its own subscribers, the leave of a member of a
worker that is gone: time for a reconnect's join to arrive from its new worker."""
INFINITE: Final = float("inf")
OWNER_RECHECK: Final = 0.5
"""Seconds between checks of a departure whose leave another, live worker is to send."""

EventSink = Callable[[str, Message], None]
"""Where events go: (channel, message)."""


class Departure:
    """The last client of ``member.user`` left ``channel``; ``stamp`` (wall time, worker id)
    orders departures across workers, and the latest one's worker sends the leave."""

    __slots__ = ("channel", "deadline", "member", "stamp")

    def __init__(
        self, channel: str, member: Member, stamp: tuple[float, str], deadline: float
    ) -> None:
        self.channel = channel
        self.member = member
        self.stamp = stamp
        self.deadline = deadline
        """Monotonic time at which this worker looks at it again."""


class Origin:
    """What this worker has applied of another worker's presence messages."""

    __slots__ = ("boot", "dirty", "heard", "returning", "seq")

    def __init__(self, boot: str, heard: float) -> None:
        self.boot = boot
        self.seq = 0
        self.heard = heard
        self.dirty = True
        """Changes may be missing (a first message, a gap): take the next digest whole."""
        self.returning = False
        """Heard again after it expired here: its next digest's members are joins."""


class PresenceService:
    """One worker's presence: its own members, everyone else's, and the events."""

    def __init__(
        self,
        *,
        worker_id: str,
        rules: ChannelRules,
        interval: float,
        expiry: float,
        max_members: int,
        max_clients: int,
        publish_control: Callable[[Message], None],
        publish_event: EventSink,
        deliver_event: EventSink,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.worker_id = worker_id
        self._rules = rules
        self.interval = interval
        self.expiry = expiry
        self.max_clients = max_clients
        self._publish_control = publish_control
        self._publish_event = publish_event
        self._deliver_event = deliver_event
        self._clock = clock
        self._wall = wall
        self.table = PresenceTable(max_members)
        self._boot = os.urandom(6).hex()
        self._seq = itertools.count(1)
        self._ops: list[Op] = []
        self._events: list[tuple[str, Message]] = []
        """Events this worker sends, waiting for the batch that announces their changes."""
        self._joining: set[tuple[str, str]] = set()
        """(channel, client) of the joins among ``_events``."""
        self._lefts: list[Op] = []
        """``left`` ops, waiting for the leaves they tell of to be sent (at most
        MAX_BATCH_OPS; past it the others forget those departures after their recheck)."""
        self._overflowed = False
        self._digest_due = True
        self._next_digest = 0.0
        self._origins: dict[str, Origin] = {}
        self._retired: dict[str, tuple[str, float]] = {}
        """Per worker id, the (boot, seq) dropped last: nothing of that boot up to that seq
        is heard again. A goodbye or a restart retires a boot for good (seq infinite); an
        expiry up to the last seq applied, so a worker that was only cut off (a Redis
        outage) is heard again when it comes back."""
        self._departures: dict[tuple[str, str], Departure] = {}
        self._due: list[tuple[float, int, Departure]] = []
        self._order = itertools.count()
        self._capped: set[str] = set()
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Announce this worker's (empty) presence, then keep sharing it."""
        self.tick()
        self._task = asyncio.create_task(self._run(), name="fanout-presence")

    async def stop(self) -> None:
        """Stop sharing and tell the others to forget this worker's members now: its
        clients are about to be closed, and will come back elsewhere within the grace."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._send(encode(Bye(self.worker_id, self._boot)))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                self.tick()
            except Exception:  # one bad step must not end presence for the worker's life
                logger.exception("presence: step failed")

    def tick(self) -> None:
        """Send the batch (and the digest when due), expire silent workers, and settle the
        departures whose time has come. Called every FLUSH_INTERVAL."""
        now = self._clock()
        if self._ops:
            ops, self._ops = self._ops, []
            self._send(encode(Delta(self.worker_id, self._boot, next(self._seq), ops)))
        if self._digest_due or now >= self._next_digest:
            self._send_digest()
            self._digest_due = False
            self._overflowed = False
            self._next_digest = now + self.interval
        if self._events:
            # After the batch (or digest) with their changes, on the same backend: whoever
            # sees a join, every worker knows the member, and can tell its leave. Leaves
            # wait too, so a client's join and leave always go out in that order.
            events, self._events = self._events, []
            self._joining.clear()
            for channel, event in events:
                self._publish_event(channel, event)
        if self._lefts:
            # After the leaves they tell of, on the same backend, in a batch of their own. A
            # worker answers a ``left`` with the join of its client of that user: had the
            # op come first, that join could go out before the leave reached the worker's
            # subscribers (its tick between the two messages), who would then see the
            # join, and the leave last: a member they take for gone (the join twice, for
            # a client that had joined already).
            lefts, self._lefts = self._lefts, []
            self._send(encode(Delta(self.worker_id, self._boot, next(self._seq), lefts)))
        for worker_id in [w for w, o in self._origins.items() if now - o.heard > self.expiry]:
            logger.warning(
                "presence: worker %s silent for %g s; its %d member(s) dropped",
                worker_id,
                self.expiry,
                self.table.size(worker_id),
            )
            self._gone(worker_id)
        self._settle(now)

    # -- this worker's members ------------------------------------------------------------

    def enabled(self, channel: str) -> bool:
        """Whether ``channel``'s rule keeps presence."""
        return self._rules.rule_for(channel).presence

    def joined(self, channel: str, client: str, identity: Identity | None) -> None:
        """``client`` (of ``identity``, None: anonymous) subscribed to ``channel``."""
        if self._stopped:
            return
        rule = self._rules.rule_for(channel)
        if not rule.presence:
            return
        user = identity.user if identity is not None else ""
        info = NULL
        if identity is not None and identity.info is not None:
            info = msgspec.json.encode(identity.info)
        table = self.table
        first = not user or (
            not table.has_user(channel, user) and (channel, user) not in self._departures
        )
        member = Member(client, user, info)
        if not table.add(self.worker_id, channel, member):
            self._over_cap(channel)
            return
        self._op(Add(channel, client, user, msgspec.Raw(info)))
        if rule.join_leave and first:
            self._join(channel, member)

    def left(self, channel: str, client: str) -> None:
        """``client`` is no longer subscribed to ``channel`` (unsub, or its socket closed)."""
        if self._stopped:
            return
        member = self.table.remove(self.worker_id, channel, client)
        if member is None:
            return
        ts = self._wall()
        self._op(Remove(channel, client, ts))
        rule = self._rules.rule_for(channel)
        if not rule.join_leave:
            return
        if not member.user:
            self._events.append((channel, _event(encode_leave, channel, member)))
        else:
            # Remembered even while the user has clients elsewhere: another worker's last
            # client of the user may leave at this same instant, and the later of the two
            # departures must be known on both to agree on who sends the leave.
            grace = rule.presence_leave_grace
            self._depart(channel, member, (ts, self.worker_id), self._clock() + grace)

    @property
    def members(self) -> int:
        """This worker's own members, every channel together (/stats, /metrics)."""
        return self.table.size(self.worker_id)

    # -- questions --------------------------------------------------------------------------

    def presence(self, channel: str) -> bytes:
        """``{"clients":{client:{"user":u,"info":i},...}}`` (at most ``max_clients`` of them,
        and ``"truncated":true`` when some were left out)."""
        entries, truncated = self.table.entries(channel, self.max_clients)
        tail = b',"truncated":true}' if truncated else b"}"
        return b'{"clients":{%b}%b' % (b",".join(entries), tail)

    def stats(self, channel: str) -> tuple[int, int]:
        """(clients, users) on ``channel``, cluster-wide."""
        return self.table.stats(channel)

    # -- other workers ----------------------------------------------------------------------

    def receive(self, message: Message) -> None:
        """Take a presence control message from another worker."""
        try:
            body = decode(message.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            logger.warning("presence: ignoring a malformed control message: %s", exc)
            return
        worker_id = body.id
        if worker_id == self.worker_id:
            return
        retired = self._retired.get(worker_id)
        seq = body.seq if not isinstance(body, Bye) else INFINITE
        if retired is not None and retired[0] == body.boot and seq <= retired[1]:
            return
        origin = self._origins.get(worker_id)
        if isinstance(body, Bye):
            if origin is None:
                self._retire(worker_id, body.boot)
            elif origin.boot == body.boot:
                self._gone(worker_id, forever=True)
            return  # else: a late goodbye of an earlier process with this id
        if origin is not None and origin.boot != body.boot:
            # Restarted under the same id: the old process is gone for good.
            self._gone(worker_id, forever=True)
            origin = None
        if origin is None:
            if len(self._origins) >= MAX_ORIGINS:
                return
            origin = self._origins[worker_id] = Origin(body.boot, self._clock())
            origin.returning = retired is not None and retired[0] == body.boot
            if origin.returning:
                logger.warning("presence: worker %s heard again", worker_id)
            self._retired.pop(worker_id, None)
            self._digest_due = True  # a newcomer: let it know this worker's members soon
        if body.seq <= origin.seq:
            return  # late or repeated: something newer is applied already
        contiguous = body.seq == origin.seq + 1
        origin.seq = body.seq
        origin.heard = self._clock()
        if isinstance(body, Delta):
            if not contiguous:
                origin.dirty = True
            if not origin.returning:  # a returning worker's digest brings everything
                self._apply(worker_id, body.ops)
        elif origin.dirty or not contiguous or body.n != self.table.size(worker_id):
            self._apply_digest(worker_id, body, origin.returning)
            origin.dirty = origin.returning = False

    def _apply(self, worker_id: str, ops: list[Op]) -> None:
        table = self.table
        for op in ops:
            if type(op) is Add:
                table.add(worker_id, op.ch, Member(op.client, op.user, bytes(op.info)))
            elif type(op) is Remove:
                member = table.remove(worker_id, op.ch, op.client)
                if member is not None:
                    self._removed(op.ch, member, (op.ts, worker_id))
            else:
                assert type(op) is Left
                self._left(op)

    def _apply_digest(self, worker_id: str, digest: Digest, returning: bool) -> None:
        channels = {
            ch: [Member(e.client, e.user, bytes(e.info)) for e in entries]
            for ch, entries in digest.channels.items()
        }
        # A worker back after it expired here (cut off, not dead): this worker told its own
        # subscribers its members left, so it tells them of those back, as it told them.
        joins = self._back(channels) if returning else []
        ts = self._wall()
        for channel, member in self.table.replace(worker_id, channels):
            self._removed(channel, member, (ts, worker_id))
        for channel, member in joins:
            self._deliver_event(channel, _event(encode_join, channel, member))

    def _back(self, channels: dict[str, list[Member]]) -> list[tuple[str, Member]]:
        """The members of ``channels`` whose join this worker's subscribers have to see:
        anonymous ones, and users neither present nor departed within the grace."""
        joins: list[tuple[str, Member]] = []
        for channel, members in channels.items():
            if not self._rules.rule_for(channel).join_leave:
                continue
            seen: set[str] = set()
            for member in members:
                user = member.user
                if user and (
                    user in seen
                    or self.table.has_user(channel, user)
                    or (channel, user) in self._departures
                ):
                    continue
                seen.add(user)
                joins.append((channel, member))
        return joins

    def _removed(self, channel: str, member: Member, stamp: tuple[float, str]) -> None:
        """Another worker's member left: remember the user's departure, so a reconnect here
        within the grace is no join (the other worker sends the leave, if any)."""
        if not member.user:
            return
        rule = self._rules.rule_for(channel)
        if rule.join_leave:
            self._depart(channel, member, stamp, self._clock() + rule.presence_leave_grace)

    def _left(self, op: Left) -> None:
        """Another worker sent the leave of ``op.user``: forget the departure; and if the
        user is back (a join that worker had not heard of yet), say so again: this worker
        if it holds the first of the user's clients."""
        key = (op.ch, op.user)
        departure = self._departures.get(key)
        if departure is not None and (
            departure.stamp[1] == op.origin or departure.stamp <= (op.ts, op.origin)
        ):
            del self._departures[key]
        if not self._rules.rule_for(op.ch).join_leave:
            return
        holders = sorted(self.table.holders(op.ch, op.user), key=lambda h: h[0])
        if holders and holders[0][0] == self.worker_id:
            member = holders[0][1]
            # A join of it still waiting for the tick goes out after the leave already: a
            # second one would be the same join twice.
            if (op.ch, member.client) not in self._joining:
                self._join(op.ch, member)

    def _gone(self, worker_id: str, *, forever: bool = False) -> None:
        """``worker_id`` died, restarted or stopped (``forever``), or went silent: drop its
        members. Their leaves, if the users do not come back within the grace, go to this
        worker's own subscribers."""
        origin = self._origins.pop(worker_id, None)
        if origin is not None:
            self._retire(worker_id, origin.boot, INFINITE if forever else origin.seq)
        now, ts = self._clock(), self._wall()
        for channel, member in self.table.drop(worker_id):
            rule = self._rules.rule_for(channel)
            if not rule.join_leave:
                continue
            if not member.user:
                self._deliver_event(channel, _event(encode_leave, channel, member))
            else:
                deadline = now + rule.presence_leave_grace + TAKEOVER_MARGIN
                self._depart(channel, member, (ts, worker_id), deadline)

    def _retire(self, worker_id: str, boot: str, seq: float = INFINITE) -> None:
        self._retired.pop(worker_id, None)
        if len(self._retired) >= MAX_ORIGINS:
            del self._retired[next(iter(self._retired))]
        self._retired[worker_id] = (boot, seq)

    # -- departures -------------------------------------------------------------------------

    def _depart(
        self, channel: str, member: Member, stamp: tuple[float, str], deadline: float
    ) -> None:
        key = (channel, member.user)
        known = self._departures.get(key)
        if known is not None and known.stamp >= stamp:
            return
        if known is None and len(self._departures) >= MAX_DEPARTURES:
            oldest = next(iter(self._departures))
            del self._departures[oldest]
            logger.warning("presence: over %d departures remembered; forgot one", MAX_DEPARTURES)
        departure = Departure(channel, member, stamp, deadline)
        self._departures[key] = departure
        heapq.heappush(self._due, (deadline, next(self._order), departure))

    def _settle(self, now: float) -> None:
        due = self._due
        while due and due[0][0] <= now:
            _, _, departure = heapq.heappop(due)
            channel, member = departure.channel, departure.member
            key = (channel, member.user)
            if self._departures.get(key) is not departure:
                continue  # replaced by a later departure, or settled
            if self.table.has_user(channel, member.user):
                del self._departures[key]  # back within the grace: no leave, no join
                continue
            owner = departure.stamp[1]
            if owner == self.worker_id:
                del self._departures[key]
                self._events.append((channel, _event(encode_leave, channel, member)))
                if len(self._lefts) < MAX_BATCH_OPS:
                    self._lefts.append(Left(channel, member.user, departure.stamp[0], owner))
            elif owner in self._origins:
                # Its worker sends the leave and says so (a ``left`` op). Should that never
                # come (its batch was dropped), stop waiting after an expiry's time.
                if now - departure.deadline > 2 * self.expiry:
                    del self._departures[key]
                else:
                    heapq.heappush(due, (now + OWNER_RECHECK, next(self._order), departure))
            else:
                del self._departures[key]  # its worker is gone: tell this worker's own
                self._deliver_event(channel, _event(encode_leave, channel, member))

    # -- sending ----------------------------------------------------------------------------

    def _join(self, channel: str, member: Member) -> None:
        self._events.append((channel, _event(encode_join, channel, member)))
        self._joining.add((channel, member.client))

    def _op(self, op: Op) -> None:
        if self._overflowed:
            return  # the digest that replaces the dropped batch carries this change too
        self._ops.append(op)
        if len(self._ops) > MAX_BATCH_OPS:
            self._ops.clear()
            next(self._seq)  # receivers see the gap and take the next digest whole
            self._overflowed = True
            self._digest_due = True

    def _send_digest(self) -> None:
        channels = {
            ch: [Entry(m.client, m.user, msgspec.Raw(m.info)) for m in roster.values()]
            for ch, roster in self.table.channels_of(self.worker_id).items()
        }
        digest = Digest(self.worker_id, self._boot, next(self._seq), self.members, channels)
        self._send(encode(digest))

    def _send(self, body: bytes) -> None:
        self._publish_control(Message.from_utf8(body))

    def _over_cap(self, channel: str) -> None:
        if channel in self._capped or len(self._capped) >= 1024:
            return
        self._capped.add(channel)
        logger.warning(
            "presence: %s has %d members on this worker (FANOUT_PRESENCE_MAX_MEMBERS); "
            "further subscribers are left out of its presence",
            channel,
            self.table.max_members,
        )


def _event(encode_event: Callable[..., bytes], channel: str, member: Member) -> Message:
    """A join or leave event for ``member``, framed once for every subscriber."""
    return Message.event(
        encode_event(channel, member.client, member.user, msgspec.Raw(member.info))
    )
