"""Where uvicorn's default WebSocket protocol departs from RFC 6455, put right per connection.

A close frame that arrives between the fragments of a message: RFC 6455 section 5.4 lets
control frames be injected in the middle of a fragmented message, and section 5.5.1 asks
the receiver of a close frame to answer with one. The websockets library (17.x, under
uvicorn 0.54's websockets-sansio protocol) instead fails the connection with 1002
"incomplete fragmented message". The library's own protocol object is given a subclass
that lets such a close end the unfinished message, so the usual closing handshake follows:
the client's close is echoed (1000 stays 1000) and the application sees that code.
wsproto (``--ws wsproto``, hypercorn) already answers this way. Only
:class:`app.server.socket.ServerSocket` calls this module.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from app.server.trims import is_sansio

_OWN = frozenset({"_id", "reader", "events", "writes", "parser", "extensions"})
"""The attributes of websockets' protocol each connection has its own of (``_id`` holds
the lazily made ``id``)."""


class CloseMidMessageProtocol(ServerProtocol):
    """websockets' server protocol, except that a close frame may interrupt a message.

    ``id`` (a ``uuid4`` that only names the connection in the library's logs) is made
    when first read rather than for every connection: a random read and a UUID each.
    """

    __slots__ = ()
    _id: uuid.UUID | None

    @property
    def id(self) -> uuid.UUID:
        """The connection's identifier in the library's log lines, made when first read."""
        made: uuid.UUID | None = getattr(self, "_id", None)
        if made is None:
            made = uuid.uuid4()
            object.__setattr__(self, "_id", made)
        return made

    @id.setter
    def id(self, value: uuid.UUID) -> None:
        # object.__setattr__, not vars(self): the instance keeps its compact inline
        # attribute values instead of growing a dict of its own (CPython 3.11).
        object.__setattr__(self, "_id", value)

    @classmethod
    def template(cls, *, max_size: int | None, logger: logging.Logger) -> dict[str, Any]:
        """The settings of ``cls(state=OPEN, max_size=max_size, logger=logger)`` that
        :meth:`opened` copies (made once per server: its settings do not change)."""
        model = cls(state=OPEN, max_size=max_size, logger=logger)
        return {name: value for name, value in vars(model).items() if name not in _OWN}

    @classmethod
    def opened(cls, template: dict[str, Any]) -> CloseMidMessageProtocol:
        """An open connection's protocol, as ``cls(state=OPEN, ...)`` with the
        :meth:`template`'s settings builds it, without the library's constructor: its
        ``uuid4`` and keyword handling were most of the object's cost (6.0 us against
        2.1). The attributes are set in the constructor's order, so instances share
        their keys; tests/test_close_mid_message.py checks that the two agree attribute
        for attribute, which a websockets upgrade that changes the constructor fails."""
        self = cls.__new__(cls)
        self._id = None  # made when read
        self.logger = template["logger"]
        self.debug = template["debug"]
        self.side = template["side"]
        self._state = template["_state"]
        self.max_message_size = template["max_message_size"]
        self.max_fragment_size = template["max_fragment_size"]
        self.current_size = None
        self.expect_continuation_frame = False
        self.origin = None
        self.extensions = []
        self.subprotocol = None
        self.close_rcvd = None
        self.close_sent = None
        self.close_rcvd_then_sent = None
        self.handshake_exc = None
        self.eof_sent = False
        self.reader = StreamReader()
        self.events = []
        self.writes = []
        # Not started as the constructor does (next()): the library only ever advances it
        # with next() after feeding bytes or the end of the stream, which starts a fresh
        # generator exactly where a started one would go on (its first wait, for data).
        # Three generator frames fewer per connect (about 2 us) and per idle socket.
        self.parser = self.parse()
        self.parser_exc = None
        self.origins = template["origins"]
        self.available_extensions = template["available_extensions"]
        self.available_subprotocols = template["available_subprotocols"]
        self.accept_called = False
        return self

    def recv_frame(self, frame: Frame) -> None:
        """Process ``frame``; a close frame first abandons an unfinished message."""
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None  # no message in progress: close as usual
        ServerProtocol.recv_frame(self, frame)


def allow_close_mid_message(protocol: Any) -> None:
    """Give uvicorn's websockets-sansio connection the protocol above (before frames flow).

    Does nothing on any other server or protocol, or on a websockets version whose
    protocol object is not the plain :class:`ServerProtocol` with ``current_size``.
    """
    if not is_sansio(protocol):
        return
    conn = getattr(protocol, "conn", None)
    if type(conn) is ServerProtocol and hasattr(conn, "current_size"):
        conn.__class__ = CloseMidMessageProtocol
