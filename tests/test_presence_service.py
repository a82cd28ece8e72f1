"""PresenceService without sockets: several workers' services joined by an in-memory control
channel whose deliveries the test holds, repeats and reorders, on a clock the test moves."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from app.services.message import Message
from app.services.presence import MAX_BATCH_OPS, TAKEOVER_MARGIN, PresenceService
from app.services.presence_wire import decode
from app.services.rules import ChannelRules
from app.services.tokens import Identity

RULES = ChannelRules.from_toml(
    """
[[channels]]
match = "room.*"
presence = true
join_leave = true
presence_leave_grace = 5
[[channels]]
match = "quiet.*"
presence = true
"""
)
EXPIRY = 3.5


class Cluster:
    """``n`` workers; ``events[i]`` is what a fanout.v1 subscriber on worker i would get."""

    def __init__(self, n: int, max_members: int = 10_000, max_clients: int = 1000) -> None:
        self.now = 1000.0
        self.wall = 1_700_000_000.0
        self.events: list[list[tuple[str, str, str]]] = [[] for _ in range(n)]
        self.control: list[tuple[int, Message]] = []
        self.dead: set[int] = set()
        self.cut: set[int] = set()
        """Workers that run on but reach nobody and hear from nobody (a Redis outage)."""
        self.services = [self._service(i, max_members, max_clients) for i in range(n)]
        for service in self.services:
            service.tick()
        self.flush()

    def _service(self, i: int, max_members: int, max_clients: int) -> PresenceService:
        def publish_event(channel: str, message: Message) -> None:
            for j, events in enumerate(self.events):  # the backend: not to or from the dead
                if j == i or not {i, j} & (self.dead | self.cut):
                    events.append(_event(message))

        return PresenceService(
            worker_id=f"host:{i}",
            rules=RULES,
            interval=1.0,
            expiry=EXPIRY,
            max_members=max_members,
            max_clients=max_clients,
            publish_control=lambda message: self.control.append((i, message)),
            publish_event=publish_event,
            deliver_event=lambda channel, message: self.events[i].append(_event(message)),
            clock=lambda: self.now,
            wall=lambda: self.wall,
        )

    def flush(self) -> list[tuple[int, Message]]:
        """Deliver every control message sent so far to every other live worker."""
        sent, self.control = self.control, []
        for origin, message in sent:
            self.deliver(origin, message)
        return sent

    def deliver(self, origin: int, message: Message) -> None:
        if origin in self.dead | self.cut:
            return
        for i, service in enumerate(self.services):
            if i != origin and i not in self.dead | self.cut:
                service.receive(message)

    def advance(self, seconds: float, step: float = 0.1) -> None:
        """Let ``seconds`` pass, every live worker ticking every ``step``."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += step
            self.wall += step
            for i, service in enumerate(self.services):
                if i not in self.dead:
                    service.tick()
            self.flush()

    def all_events(self) -> list[tuple[str, str, str]]:
        return [e for events in self.events for e in events]


def _event(message: Message) -> tuple[str, str, str]:
    body = json.loads(message.data)
    return body["ev"], body["who"]["user"], body["who"]["client"]


def user(name: str, info: Any = None) -> Identity:
    return Identity(user=name, exp=None, info=info)


def test_a_join_reaches_every_worker_once_and_every_worker_answers() -> None:
    c = Cluster(3)
    a, b, w2 = c.services
    a.joined("room.1", "a-1", user("alice", {"name": "Alice"}))
    assert c.events == [[], [], []]  # the join waits for the batch announcing alice
    c.advance(0.1)
    assert c.events == [[("join", "alice", "a-1")]] * 3  # one event, seen on every worker
    b.joined("room.1", "b-1", None)
    c.advance(0.1)
    for service in c.services:
        assert service.stats("room.1") == (2, 1)  # the anonymous client is not a user
        assert json.loads(service.presence("room.1")) == {
            "clients": {
                "a-1": {"user": "alice", "info": {"name": "Alice"}},
                "b-1": {"user": "", "info": None},
            }
        }
    assert a.members == 1 and b.members == 1 and w2.members == 0


def test_a_reconnect_within_the_grace_on_another_worker_is_neither_leave_nor_join() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("room.1", "a-1", user("alice"))
    c.advance(0.5)
    a.left("room.1", "a-1")
    c.advance(1.0)
    b.joined("room.1", "b-7", user("alice"))
    c.advance(20.0)
    assert c.all_events() == [("join", "alice", "a-1")] * 2
    assert json.loads(a.presence("room.1"))["clients"].keys() == {"b-7"}


def test_a_real_leave_comes_after_the_grace_once() -> None:
    c = Cluster(3)
    a = c.services[0]
    a.joined("room.1", "a-1", user("alice"))
    a.left("room.1", "a-1")
    c.advance(4.8)
    assert [e for e in c.all_events() if e[0] == "leave"] == []
    c.advance(0.4)
    assert c.events == [[("join", "alice", "a-1"), ("leave", "alice", "a-1")]] * 3
    c.advance(20.0)
    assert len(c.all_events()) == 6


def test_the_last_of_two_departures_on_two_workers_sends_the_one_leave() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("room.1", "a-1", user("alice"))
    b.joined("room.1", "b-1", user("alice"))  # not yet heard by a: both send a join
    c.advance(0.2)
    a.left("room.1", "a-1")
    b.left("room.1", "b-1")  # same instant, before either heard of the other
    c.advance(20.0)
    assert [e for e in c.events[0] if e[0] == "leave"] == [("leave", "alice", "b-1")]
    assert [e for e in c.events[1] if e[0] == "leave"] == [("leave", "alice", "b-1")]


def test_a_leave_sent_before_the_reconnect_was_heard_is_followed_by_a_join() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("room.1", "a-1", user("alice"))
    a.left("room.1", "a-1")
    c.advance(4.9)
    b.joined("room.1", "b-1", user("alice"))  # suppressed: alice left within the grace
    held = c.control
    c.control = []
    c.now += 0.2  # a's grace ends before b's change reaches it
    c.wall += 0.2
    a.tick()
    for origin, message in held + c.control:
        c.deliver(origin, message)
    c.control = []
    c.advance(1.0)
    assert c.events[0] == [
        ("join", "alice", "a-1"),
        ("leave", "alice", "a-1"),
        ("join", "alice", "b-1"),
    ]


def test_late_and_repeated_messages_never_bring_a_member_back() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("room.1", "a-1", user("alice"))
    a.tick()
    added = c.control[:]
    c.flush()
    c.advance(1.1)  # a digest with alice in it
    a.left("room.1", "a-1")
    c.advance(0.1)
    assert b.stats("room.1") == (0, 0)
    for origin, message in added:  # the add again, and an old digest
        c.deliver(origin, message)
    old_digests = [m for o, m in added if b"presence_digest" in m.data]
    for message in old_digests:
        b.receive(message)
    assert b.stats("room.1") == (0, 0)
    assert not b.table.has_user("room.1", "alice")


def test_a_late_goodbye_of_an_earlier_process_is_ignored() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("room.1", "a-1", user("alice"))
    c.advance(0.2)
    bye = msgspec.json.encode({"type": "presence_bye", "id": "host:0", "boot": "0" * 12})
    b.receive(Message.from_utf8(bye))
    assert b.stats("room.1") == (1, 1)


def test_a_dead_workers_members_are_gone_within_the_expiry_and_leave_after_the_grace() -> None:
    c = Cluster(3)
    a, b, w2 = c.services
    a.joined("room.1", "a-1", user("alice"))
    a.joined("room.1", "a-2", None)
    c.advance(0.2)
    c.dead.add(0)
    c.advance(EXPIRY + 0.2)
    assert b.stats("room.1") == (0, 0) and w2.stats("room.1") == (0, 0)
    # The anonymous client leaves at once; alice after the grace, on each survivor for its
    # own subscribers only.
    assert c.events[1][-1] == ("leave", "", "a-2")
    c.advance(5.0 + TAKEOVER_MARGIN)
    for i in (1, 2):
        assert c.events[i][-2:] == [("leave", "", "a-2"), ("leave", "alice", "a-1")]
    assert c.events[0] == [("join", "alice", "a-1"), ("join", "", "a-2")]


def test_a_dead_workers_user_back_on_a_survivor_within_the_grace_makes_no_event() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("room.1", "a-1", user("alice"))
    c.advance(0.2)
    c.dead.add(0)
    c.advance(1.0)
    b.joined("room.1", "b-1", user("alice"))  # reconnected before the expiry
    c.advance(EXPIRY + 10)
    assert c.events[1] == [("join", "alice", "a-1")]
    assert b.stats("room.1") == (1, 1)


def test_a_stopping_worker_says_goodbye_and_its_members_go_at_once() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("room.1", "a-1", user("alice"))
    c.advance(0.2)
    a._stopped = True
    a._send(msgspec.json.encode({"type": "presence_bye", "id": "host:0", "boot": a._boot}))
    c.flush()
    assert b.stats("room.1") == (0, 0)


def test_channels_without_join_leave_keep_presence_but_send_no_events() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("quiet.1", "a-1", user("alice"))
    a.joined("other", "a-1", user("alice"))  # no presence at all
    c.advance(0.2)
    assert b.stats("quiet.1") == (1, 1) and b.stats("other") == (0, 0)
    a.left("quiet.1", "a-1")
    c.advance(10.0)
    assert c.all_events() == []


def test_an_overflowing_batch_is_replaced_by_a_digest() -> None:
    c = Cluster(2)
    a, b = c.services
    for i in range(MAX_BATCH_OPS + 10):
        a.joined("quiet.1", f"a-{i}", user(f"u{i}"))
    a.left("quiet.1", "a-0")
    c.advance(0.1)
    kinds = [decode(m.data).__class__.__name__ for _, m in c.flush()]
    assert "Delta" not in kinds
    assert b.stats("quiet.1") == (MAX_BATCH_OPS + 9, MAX_BATCH_OPS + 9)
    a.left("quiet.1", "a-1")  # and deltas again afterwards
    c.advance(0.1)
    assert b.stats("quiet.1") == (MAX_BATCH_OPS + 8, MAX_BATCH_OPS + 8)


def test_members_per_channel_and_listed_clients_are_bounded() -> None:
    c = Cluster(2, max_members=3, max_clients=4)
    a, b = c.services
    for i in range(5):
        a.joined("quiet.1", f"a-{i}", user(f"u{i}"))
        b.joined("quiet.1", f"b-{i}", user(f"u{i}"))
    c.advance(0.2)
    assert a.members == 3 and a.stats("quiet.1") == (6, 3)
    answer = json.loads(a.presence("quiet.1"))
    assert len(answer["clients"]) == 4 and answer["truncated"] is True


def test_a_worker_cut_off_past_the_expiry_is_heard_again_and_its_users_join_again() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("room.1", "a-1", user("alice"))
    a.joined("room.1", "a-2", user("bob"))
    c.advance(0.2)
    c.cut.add(0)  # a Redis outage: a runs on, b hears nothing of it
    a.left("room.1", "a-2")  # bob goes meanwhile
    c.advance(EXPIRY + 5.0 + TAKEOVER_MARGIN + 0.2)
    assert b.stats("room.1") == (0, 0)
    assert c.events[1][-2:] == [("leave", "alice", "a-1"), ("leave", "bob", "a-2")]
    before = list(c.events[1])
    c.cut.clear()
    c.advance(1.2)  # a's next digest
    assert b.stats("room.1") == (1, 1)
    assert c.events[1][len(before) :] == [("join", "alice", "a-1")]


def test_a_late_message_from_before_an_expiry_is_not_applied() -> None:
    c = Cluster(2)
    a, b = c.services
    a.joined("room.1", "a-1", user("alice"))
    a.tick()
    old = c.control[:]
    c.flush()
    c.dead.add(0)
    c.advance(EXPIRY + 0.2)
    c.dead.clear()
    for origin, message in old:
        c.deliver(origin, message)
    assert b.stats("room.1") == (0, 0)


def test_a_worker_dying_right_after_a_join_still_has_its_member_leave() -> None:
    c = Cluster(2)
    a = c.services[0]
    a.joined("room.1", "a-1", user("alice"))
    c.advance(0.1)  # the batch with alice, then her join: b has both
    c.dead.add(0)
    c.advance(EXPIRY + 5.0 + TAKEOVER_MARGIN + 0.3)
    assert c.events[1] == [("join", "alice", "a-1"), ("leave", "alice", "a-1")]


def test_a_join_and_a_leave_within_one_batch_go_out_in_that_order() -> None:
    c = Cluster(2)
    a = c.services[0]
    a.joined("room.1", "a-9", None)
    a.left("room.1", "a-9")
    c.advance(0.1)
    assert c.events[1] == [("join", "", "a-9"), ("leave", "", "a-9")]


class Wire:
    """Two workers joined as Redis joins them: each worker's control messages and events go
    out in one stream, in the order it sent them, and the test hands them over one at a
    time, so a worker can tick between two messages of the other's stream."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_700_000_000.0
        self.events: list[list[tuple[str, str, str]]] = [[], []]
        """What a fanout.v1 subscriber on each worker gets, in order."""
        self.streams: list[list[tuple[str, Message]]] = [[], []]
        """Per sender, what it sent and the other has not read yet: ("control", message) or
        ("event", message)."""
        self.services = [self._service(i) for i in (0, 1)]
        for i in (0, 1):
            self.services[i].tick()
        self.read_all()

    def _service(self, i: int) -> PresenceService:
        def publish_event(channel: str, message: Message) -> None:
            self.events[i].append(_event(message))
            self.streams[i].append(("event", message))

        return PresenceService(
            worker_id=f"host:{i}",
            rules=RULES,
            interval=1.0,
            expiry=EXPIRY,
            max_members=100,
            max_clients=100,
            publish_control=lambda message: self.streams[i].append(("control", message)),
            publish_event=publish_event,
            deliver_event=lambda channel, message: self.events[i].append(_event(message)),
            clock=lambda: self.now,
            wall=lambda: self.wall,
        )

    def read_one(self, sender: int) -> None:
        """The other worker reads the next message ``sender`` sent."""
        kind, message = self.streams[sender].pop(0)
        reader = 1 - sender
        if kind == "control":
            self.services[reader].receive(message)
        else:
            self.events[reader].append(_event(message))

    def read_all(self) -> None:
        for sender in (0, 1):
            while self.streams[sender]:
                self.read_one(sender)

    def advance(self, seconds: float) -> None:
        """Both tick every 0.1 s and read everything sent, for ``seconds``."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.step(0.1)
            for service in self.services:
                service.tick()
            self.read_all()

    def step(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


def test_a_join_answering_a_left_op_never_overtakes_the_leave_it_answers() -> None:
    # Worker 0 sends alice's leave (its departure, the latest) while worker 1 already holds
    # a new client of alice that worker 0 has not heard of: worker 1 answers the ``left`` op
    # with her join. Worker 1 ticks between any two messages of worker 0's stream (a loaded
    # machine), yet its subscribers see the leave before that join: alice is present.
    w = Wire()
    a, b = w.services
    a.joined("room.1", "a-1", user("alice"))
    w.advance(0.2)
    a.left("room.1", "a-1")
    w.advance(4.8)
    b.joined("room.1", "b-1", user("alice"))  # within the grace on b: no join yet
    b.tick()
    held = w.streams[1]  # b's add reaches a only after a's grace ended
    w.streams[1] = []
    w.step(0.3)
    a.tick()  # the grace ends: the leave (and the ``left`` op) are due
    a.tick()  # ... and sent
    while w.streams[0]:
        w.read_one(0)
        b.tick()  # b's timer fires before it reads the next message
    w.streams[1] = held + w.streams[1]
    w.advance(1.0)
    assert w.events[1] == [
        ("join", "alice", "a-1"),
        ("leave", "alice", "a-1"),
        ("join", "alice", "b-1"),
    ]
    assert w.events[0] == w.events[1]


def test_a_left_op_about_a_join_still_to_be_sent_adds_no_second_join() -> None:
    # Worker 1 never heard of alice's first client (it came up after she left), so its new
    # client of alice is a first: a join, still waiting for its tick when worker 0's leave
    # and ``left`` op arrive. That join goes out after the leave already; once is enough.
    w = Wire()
    a, b = w.services
    a.joined("room.1", "a-1", user("alice"))
    a.left("room.1", "a-1")
    a.tick()
    w.streams[0] = []  # worker 1 is not up yet
    w.advance(4.9)
    b.joined("room.1", "b-1", user("alice"))
    w.step(0.3)
    a.tick()  # the grace ends: the leave (and the ``left`` op) are due
    a.tick()  # ... and sent
    while w.streams[0]:
        w.read_one(0)
    w.advance(1.0)
    assert w.events[1] == [("leave", "alice", "a-1"), ("join", "alice", "b-1")]
