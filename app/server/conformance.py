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

from typing import Any

from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from app.server.trims import is_sansio


class CloseMidMessageProtocol(ServerProtocol):
    """websockets' server protocol, except that a close frame may interrupt a message."""

    __slots__ = ()

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
