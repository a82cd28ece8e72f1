"""A deliberately minimal raw WebSocket client for tests that must misbehave on the wire."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from dataclasses import dataclass
from typing import cast

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def handshake_request(host: str, port: int, path: str, *, version: str = "13") -> bytes:
    """The bytes of a client upgrade request (with a fresh key)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A masked client frame."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head.append(0x80 | 126)
        head += struct.pack("!H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + mask + masked


@dataclass
class Frame:
    """A frame received from the server."""

    opcode: int
    payload: bytes
    raw: bytes = b""
    """The frame exactly as it came off the wire."""

    @property
    def close_code(self) -> int | None:
        """The close code of a close frame."""
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])


class RawClient:
    """One TCP connection speaking just enough WebSocket to misbehave."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status_line = b""
        self.response_head = b""

    @classmethod
    async def open(
        cls,
        port: int,
        path: str,
        *,
        version: str = "13",
        rcvbuf: int | None = None,
        upgrade: bool = True,
    ) -> RawClient:
        """Connect and send the upgrade request; ``rcvbuf`` shrinks the kernel's receive buffer."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
        client = cls(reader, writer)
        if upgrade:
            writer.write(handshake_request("127.0.0.1", port, path, version=version))
            await writer.drain()
            client.response_head = await reader.readuntil(b"\r\n\r\n")
            client.status_line = client.response_head.split(b"\r\n", 1)[0]
        return client

    @property
    def status(self) -> int:
        """The HTTP status of the handshake response."""
        return int(self.status_line.split()[1])

    async def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """Send one frame."""
        self.writer.write(encode_frame(opcode, payload, fin=fin))
        await self.writer.drain()

    async def recv_frame(self) -> Frame:
        """Read one frame (raises IncompleteReadError at EOF)."""
        head = await self.reader.readexactly(2)
        b1, b2 = head
        n = b2 & 0x7F
        if n == 126:
            ext = await self.reader.readexactly(2)
            (n,) = struct.unpack("!H", ext)
            head += ext
        elif n == 127:
            ext = await self.reader.readexactly(8)
            (n,) = struct.unpack("!Q", ext)
            head += ext
        payload = await self.reader.readexactly(n)
        return Frame(b1 & 0x0F, payload, head + payload)

    async def recv_until_close(self, limit: int = 100_000) -> tuple[list[Frame], Frame | None]:
        """Frames up to and including a close frame; (frames, None) if the socket ends first."""
        frames: list[Frame] = []
        for _ in range(limit):
            try:
                frame = await self.recv_frame()
            except (asyncio.IncompleteReadError, ConnectionError):
                return frames, None
            if frame.opcode == OP_CLOSE:
                return frames, frame
            frames.append(frame)
        raise AssertionError("no close frame within the frame limit")

    @property
    def _transport(self) -> asyncio.Transport:
        # StreamWriter.transport is typed as a WriteTransport; the stream's transport is a
        # full (readable) Transport.
        return cast(asyncio.Transport, self.writer.transport)

    def stop_reading(self) -> None:
        """Take nothing more off the socket: the kernel buffer fills, then the server's."""
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again after :meth:`stop_reading`."""
        self._transport.resume_reading()

    def reset(self) -> None:
        """Vanish: close with a TCP reset, no close frame."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        """Close the TCP connection without a closing handshake."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
