"""Raw asyncio WebSocket clients, many per process, driven by a coordinator over a pipe.

A worker process owns thousands of connections (``WsConn``), rotates loopback
source addresses, and obeys small commands (connect, measure, pause, churn, ...)
sent by ``bench.scenarios``. Every loop here is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import struct
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from bench import protocol as wsp
from bench.http_load import HttpConn, HttpLoad

Cmd = dict[str, Any]


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class WsConn(asyncio.Protocol):
    """One client connection: does the upgrade itself, then counts server frames."""

    def __init__(
        self,
        worker: Worker,
        path: str,
        role: str,
        prefix: int,
        proto: str = "raw",
        channel: str = "news",
        since: tuple[int, str] | None = None,
        full_reply: bool = False,
    ) -> None:
        self.worker = worker
        self.path = path
        self.role = role
        self.key = wsp.make_key()
        # fanout.v1: the upgrade offers the subprotocol, then one `sub` whose reply makes the
        # connection ready; frames are still counted from their headers, and payload prefixes
        # (latency, publisher acks) are turned into raw-layout headers by `v1_headers`.
        self.v1 = proto == "v1"
        self.channel = channel
        self.prefix = prefix
        self.subscribing = self.v1
        if self.v1 and prefix:
            prefix = max(prefix, wsp.v1_prefix_len(channel))
        self.parser = wsp.FrameParser(prefix=max(prefix, 24) if self.v1 else prefix)
        # History recovery: `sub` carries `since`, and the whole reply (its `pubs`) is kept.
        self.since = since
        self.full_reply = full_reply
        self.reply = b""
        self.ready_at = 0.0
        if full_reply:
            self.parser.prefix = wsp.FULL_PAYLOAD
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.closed = False
        self.lost_unexpectedly = False
        self.closing = False
        self._hbuf = b""
        self.mark = 0
        self.rx_ns = 0  # kernel receive time (SO_TIMESTAMPNS) of the bytes being parsed
        self.publisher: Publisher | None = None

    # asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        w = self.worker
        offer = wsp.V1_SUBPROTOCOL if self.v1 else None
        self.send(wsp.handshake_request(w.host, w.port, self.path, self.key, offer))

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self._hbuf += data
            try:
                offer = wsp.V1_SUBPROTOCOL if self.v1 else None
                done, rest = wsp.parse_handshake_response(self._hbuf, self.key, offer)
            except wsp.HandshakeError as exc:
                if not self.ready.done():
                    self.ready.set_exception(exc)
                self.abort()
                return
            if not done:
                return
            self.upgraded = True
            self._hbuf = b""
            if self.v1:
                sub = wsp.v1_sub(1, self.channel, self.since)
                self.send(wsp.encode_frame(sub, wsp.OP_TEXT))
            elif not self.ready.done():
                self.ready.set_result(None)
            if not rest:
                return
            data = rest
        parser = self.parser
        n = parser.feed(data)
        if parser.prefixes:
            prefixes = parser.prefixes
            parser.prefixes = []
            if self.v1:
                if self.subscribing:
                    self._check_sub_reply(prefixes)
                prefixes = wsp.v1_headers(prefixes) if self.prefix else []
            if self.publisher is not None:
                self.publisher.on_messages(prefixes)
            if self.worker.recording and self.role != "pub":
                now = time.time_ns()
                rx = self.rx_ns
                app = self.worker.latencies_app
                rec = self.worker.latencies
                keys = self.worker.latency_keys
                unpack = wsp.PAYLOAD_HEADER.unpack_from
                for p in prefixes:
                    if len(p) >= wsp.PAYLOAD_MIN:
                        t, pub, seq = unpack(p)
                        app.append(now - t)
                        if rx:
                            rec.append(rx - t)
                            # Which message: the coordinator groups samples by it to time
                            # each message's first receivers (`stats.first_share`).
                            keys.append((pub << 32) | seq)
        elif n and self.publisher is not None:
            self.publisher.on_messages([])
        if parser.pings:
            for body in parser.pings:
                self.send(wsp.encode_frame(body, wsp.OP_PONG))
            parser.pings.clear()
        if parser.closed and not self.closing:
            self.closing = True
            self.send(wsp.encode_frame(b"\x03\xe8", wsp.OP_CLOSE))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if not self.closing:
                self.lost_unexpectedly = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before upgrade"))

    # helpers ----------------------------------------------------------------
    def _check_sub_reply(self, prefixes: list[bytes]) -> None:
        for p in prefixes:
            status = wsp.v1_reply_status(p)
            if status is None:
                continue
            self.subscribing = False
            self.ready_at = time.monotonic()
            if self.full_reply:
                self.reply = p
            if not self.prefix:
                self.parser.prefix = 0  # from now on count frames without keeping payloads
            if self.ready.done():
                return
            if status == "res":
                self.ready.set_result(None)
            else:
                self.ready.set_exception(wsp.HandshakeError(f"sub refused: {p!r}"))
                self.abort()
            return

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Polite close: close frame, then drop the socket (bounded; no waiting)."""
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wsp.encode_frame(b"\x03\xe8", wsp.OP_CLOSE))
            self.transport.close()


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def bound_socket(source: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``source`` whose port is chosen at connect.

    ``bind((ip, 0))`` makes the kernel pick a port free for every destination; with tens
    of thousands of sockets per source address that search took most of the client
    processes' CPU (kernel time) and cut connects/s from ~2,000 to ~300 past 50,000
    connections. IP_BIND_ADDRESS_NO_PORT defers the choice to ``connect``, which only needs
    the 4-tuple to be unique (Linux >= 4.2)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


_TS = struct.Struct("@qq")


class SocketShim:
    """The part of an asyncio transport that ``WsConn`` uses, over a non-blocking socket
    read with ``recvmsg`` so that each read comes with its kernel receive timestamp."""

    def __init__(self, sock: socket.socket, conn: WsConn, loop: asyncio.AbstractEventLoop):
        self.sock = sock
        self.conn = conn
        self.loop = loop
        self.closed = False
        self.reading = True
        self.fd = sock.fileno()
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        conn = self.conn
        for _ in range(8):  # bounded per wake-up, to stay fair to other sockets
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(262144, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(exc)
                return
            if not data:
                self._lost(None)
                return
            rx = 0
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                    sec, nsec = _TS.unpack_from(raw)
                    rx = sec * 1_000_000_000 + nsec
            conn.rx_ns = rx
            conn.data_received(data)
            if self.closed or not self.reading:
                return

    def _lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self._close_now()
            self.conn.connection_lost(exc)

    def _close_now(self) -> None:
        self.closed = True
        if self.reading:
            self.loop.remove_reader(self.fd)
        self.reading = False
        self.sock.close()

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            pass  # only control frames go through here; losing one under pressure is fine
        except OSError as exc:
            self._lost(exc)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        if self.reading and not self.closed:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def resume_reading(self) -> None:
        if not self.reading and not self.closed:
            self.loop.add_reader(self.fd, self._readable)
            self.reading = True

    def close(self) -> None:
        self._lost(None)

    def abort(self) -> None:
        self._lost(None)


class Publisher:
    """Publishes on one connection, either with a bounded window of messages in
    flight (it is subscribed, so it sees its own messages come back) or at a fixed rate."""

    def __init__(self, conn: WsConn, pub_id: int, spec: Cmd) -> None:
        self.conn = conn
        self.pub_id = pub_id
        self.size = max(int(spec.get("size", 64)), wsp.PAYLOAD_MIN)
        self.v1_prefix = wsp.v1_pub_prefix(conn.channel) if conn.v1 else b""
        self.window = int(spec.get("window", 0))
        self.rate = float(spec.get("rate", 0.0))
        self.max_messages = int(spec.get("max_messages", 50_000_000))
        self.sent = 0
        self.acked = 0
        self.stop_at = 0.0
        self.start_at = 0.0
        self.base = 0
        self.active = False
        conn.publisher = self

    def _frames(self, k: int) -> bytes:
        out = []
        if self.v1_prefix:
            # `{"op":"pub","ch":C,"data":<JSON data of `size` bytes>}`, no id: no reply.
            head = self.v1_prefix
            for _ in range(k):
                data = wsp.make_json_data(self.size, self.pub_id, self.sent, time.time_ns())
                out.append(wsp.encode_frame(head + data + b"}", wsp.OP_TEXT))
                self.sent += 1
            return b"".join(out)
        for _ in range(k):
            payload = wsp.make_payload(self.size, self.pub_id, self.sent, time.time_ns())
            out.append(wsp.encode_frame(payload, wsp.OP_BINARY))
            self.sent += 1
        return b"".join(out)

    def _send(self, k: int) -> None:
        k = min(k, self.max_messages - self.sent)
        if k > 0 and not self.conn.closed:
            self.conn.send(self._frames(k))

    def start(self, start_at: float, stop_at: float) -> None:
        self.start_at = start_at
        self.stop_at = stop_at
        self.base = self.sent
        self.active = True
        if self.window:
            self._send(self.window)
        elif self.rate > 0:
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self.active = False

    def on_messages(self, prefixes: list[bytes]) -> None:
        own = 0
        unpack = wsp.PAYLOAD_HEADER.unpack_from
        for p in prefixes:
            if len(p) >= wsp.PAYLOAD_MIN and unpack(p)[1] == self.pub_id:
                own += 1
        self.acked += own
        if self.active and self.window and own:
            if time.monotonic() >= self.stop_at:
                self.active = False
                return
            self._send(min(own, self.window - (self.sent - self.acked)))

    def _tick(self) -> None:
        if not self.active:
            return
        now = time.monotonic()
        if now >= self.stop_at or self.sent >= self.max_messages or self.conn.closed:
            self.active = False
            return
        due = self.base + int((now - self.start_at) * self.rate) + 1
        self._send(min(due - self.sent, 1000))
        interval = 1.0 / self.rate
        next_at = self.start_at + ((self.sent - self.base) / self.rate)
        delay = max(0.0005, min(interval, next_at - time.monotonic()))
        asyncio.get_running_loop().call_later(delay, self._tick)


class Worker:
    """One client process: a set of connections and a command loop."""

    def __init__(self, pipe: Connection, worker_id: int, host: str, port: int) -> None:
        self.pipe = pipe
        self.worker_id = worker_id
        self.host = host
        self.port = port
        self.conns: list[WsConn] = []
        self.publishers: list[Publisher] = []
        self.recording = False
        self.latencies: list[int] = []
        self.latencies_app: list[int] = []
        self.latency_keys: list[int] = []
        """The message of each ``latencies`` sample (publisher id << 32 | sequence)."""
        self.done: asyncio.Future[None] | None = None
        self._src_i = worker_id
        self.fd_limit = raise_fd_limit()
        self.bind_no_port = False
        """Bind source addresses with IP_BIND_ADDRESS_NO_PORT (see ``bound_socket``)."""

    # connection management ---------------------------------------------------
    async def open_one(
        self,
        path: str,
        role: str,
        prefix: int,
        sources: list[str],
        limit_s: float,
        proto: str = "raw",
        channel: str = "news",
        since: tuple[int, str] | None = None,
        full_reply: bool = False,
    ) -> WsConn:
        loop = asyncio.get_running_loop()
        local: tuple[str, int] | None = None
        if sources:
            local = (sources[self._src_i % len(sources)], 0)
            self._src_i += 1
        holder: list[WsConn] = []

        def factory() -> WsConn:
            c = WsConn(self, path, role, prefix, proto, channel, since, full_reply)
            holder.append(c)
            return c

        async def go() -> WsConn:
            if local is not None and self.bind_no_port:
                sock = bound_socket(local[0])
                try:
                    await loop.sock_connect(sock, (self.host, self.port))
                except BaseException:
                    sock.close()
                    raise
                await loop.create_connection(factory, sock=sock)
            else:
                await loop.create_connection(factory, self.host, self.port, local_addr=local)
            await holder[0].ready
            return holder[0]

        try:
            return await asyncio.wait_for(go(), limit_s)
        except BaseException:
            if holder:
                holder[0].abort()
            raise

    async def open_one_ts(
        self,
        path: str,
        role: str,
        prefix: int,
        sources: list[str],
        limit_s: float,
        proto: str = "raw",
        channel: str = "news",
        since: tuple[int, str] | None = None,
        full_reply: bool = False,
    ) -> WsConn:
        """Like ``open_one`` on a plain socket with SO_TIMESTAMPNS: every read carries the
        kernel's receive time, so latency excludes the generator's own processing delay."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if sources:
                sock.bind((sources[self._src_i % len(sources)], 0))
                self._src_i += 1
            await asyncio.wait_for(loop.sock_connect(sock, (self.host, self.port)), limit_s)
        except BaseException:
            sock.close()
            raise
        conn = WsConn(self, path, role, prefix, proto, channel, since, full_reply)
        shim = SocketShim(sock, conn, loop)
        conn.connection_made(shim)  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), limit_s)
        except BaseException:
            shim.abort()
            raise
        return conn

    async def cmd_connect(self, cmd: Cmd) -> Cmd:
        n = int(cmd["n"])
        role = str(cmd.get("role", "sub"))
        path = str(cmd.get("path", "/ws/broadcast"))
        prefix = int(cmd.get("prefix", 0))
        sources = list(cmd.get("sources", []))
        timeout = float(cmd.get("timeout", 10.0))
        proto = str(cmd.get("proto", "raw"))
        channel = str(cmd.get("channel", "news"))
        full_reply = bool(cmd.get("full_reply", False))
        opener = self.open_one_ts if cmd.get("kernel_ts") else self.open_one
        self.bind_no_port = bool(cmd.get("bind_no_port", False))
        # `?token=`: every URL signed here, before the clock starts (see `sign_tokens`).
        paths = [path] * n
        token = cmd.get("token")
        if token:
            sep = "&" if "?" in path else "?"
            toks = sign_tokens(n, str(token["secret"]), str(token["mode"]), self.worker_id)
            paths = [f"{path}{sep}token={t}" for t in toks]
        deadline = time.monotonic() + float(cmd.get("deadline", 60.0))
        sem = asyncio.Semaphore(int(cmd.get("concurrency", 200)))
        errors: Counter[str] = Counter()
        ok = 0
        times: list[float] = []
        t_start = time.monotonic()

        async def one(url: str) -> None:
            nonlocal ok
            async with sem:
                if time.monotonic() > deadline:
                    errors["deadline"] += 1
                    return
                t = time.monotonic()
                try:
                    c = await opener(
                        url, role, prefix, sources, timeout, proto, channel, None, full_reply
                    )
                except Exception as exc:
                    errors[_err_name(exc)] += 1
                    return
                times.append(time.monotonic() - t)
                self.conns.append(c)
                ok += 1

        await asyncio.gather(*(one(url) for url in paths))
        elapsed = time.monotonic() - t_start
        if role == "pub":
            base = self.worker_id * 1000 + len(self.publishers)
            new = [c for c in self.conns if c.role == "pub" and c.publisher is None]
            for i, c in enumerate(new):
                self.publishers.append(Publisher(c, base + i + 1, cmd.get("publish", {})))
        times.sort()
        return {
            "ok": ok,
            "failed": n - ok,
            "errors": dict(errors),
            "elapsed": elapsed,
            "handshake_p50_ms": 1000 * times[len(times) // 2] if times else None,
            "handshake_max_ms": 1000 * times[-1] if times else None,
            "open": self.open_count(),
        }

    async def cmd_drop(self, cmd: Cmd) -> Cmd:
        """Close (politely) every open connection of ``role``; they stay listed, so
        ``reconnect`` can open each again from where it was."""
        role = str(cmd.get("role", "sub"))
        conns = [c for c in self.conns if c.role == role and not c.closed]
        for c in conns:
            c.close()
        await asyncio.sleep(0.05)
        return {"dropped": len(conns), "open": self.open_count()}

    async def cmd_publish_n(self, cmd: Cmd) -> Cmd:
        """The first publisher sends ``n`` messages (window of 32) and waits, bounded, until
        it has received them all back (a history channel stores before it delivers)."""
        n = int(cmd["n"])
        p = self.publishers[0]
        now = time.monotonic()
        target = p.acked + n
        p.window = int(cmd.get("window", 32))
        p.rate = 0.0
        p.max_messages = p.sent + n
        p.start(now, now + float(cmd.get("timeout", 30.0)))
        deadline = now + float(cmd.get("timeout", 30.0))
        while time.monotonic() < deadline:
            if p.acked >= target:
                break
            await asyncio.sleep(0.01)
        p.stop()
        acked = p.acked - (target - n)
        return {"sent": n, "acked": acked, "elapsed": time.monotonic() - now}

    async def cmd_reconnect(self, cmd: Cmd) -> Cmd:
        """Reopen every dropped connection of ``role`` at ``start_at``, all at once, each
        subscribing with ``since`` its last position (the offset and epoch of its previous
        ``sub`` reply); keep each whole reply. Returns when the first began and the last
        reply arrived (``time.monotonic``, one clock for every process of the host)."""
        role = str(cmd.get("role", "rec"))
        timeout = float(cmd.get("timeout", 30.0))
        sources = list(cmd.get("sources", []))
        old = [c for c in self.conns if c.role == role and c.closed and c.reply]
        errors: Counter[str] = Counter()
        new: list[WsConn] = []
        await _sleep_until(float(cmd.get("start_at", 0.0)))
        t_first = time.monotonic()

        async def one(c: WsConn) -> None:
            since = reply_position(c.reply)
            try:
                n = await self.open_one(
                    c.path, "recovered", 0, sources, timeout, "v1", c.channel, since, True
                )
            except Exception as exc:
                errors[_err_name(exc)] += 1
                return
            n.since = since
            new.append(n)

        await asyncio.gather(*(one(c) for c in old))
        self.conns.extend(new)
        t_last = max((c.ready_at for c in new), default=t_first)
        return {
            "t_first": t_first,
            "t_last": t_last,
            "ok": len(new),
            "failed": len(old) - len(new),
            "errors": dict(errors),
        }

    async def cmd_recovery_check(self, cmd: Cmd) -> Cmd:
        """Check each reconnected client's reply: ``recovered``, exactly ``expect``
        publications, offsets ``since+1 ..`` in order, the publisher's sequence in order."""
        expect = int(cmd["expect"])
        good = 0
        problems: Counter[str] = Counter()
        example: list[Any] = []
        for c in self.conns:
            if c.role != "recovered":
                continue
            problem = check_recovery(c.reply, c.since, expect)
            if problem:
                problems[problem] += 1
                if not example:
                    example = [problem, c.since, recovered_order(c.reply)]
            else:
                good += 1
        return {"complete": good, "problems": dict(problems), "example": example}

    def open_count(self) -> int:
        return sum(1 for c in self.conns if not c.closed)

    # measurement -----------------------------------------------------------
    async def cmd_measure(self, cmd: Cmd) -> Cmd:
        t0 = float(cmd["t0"])
        t1 = float(cmd["t1"])
        pub_start = float(cmd.get("pub_start", t0))
        pub_spec = cmd.get("publish")
        if pub_spec is not None:
            for p in self.publishers:
                p.window = int(pub_spec.get("window", 0))
                p.rate = float(pub_spec.get("rate", 0.0))
                p.size = max(int(pub_spec.get("size", 64)), wsp.PAYLOAD_MIN)
                p.max_messages = p.sent + int(pub_spec.get("max_messages", 50_000_000))
        await _sleep_until(pub_start)
        if pub_spec is not None:
            for p in self.publishers:
                p.start(pub_start, t1)
        await _sleep_until(t0)
        sent0 = sum(p.sent for p in self.publishers)
        before = [c.parser.frames for c in self.conns]
        bytes0 = sum(c.parser.bytes for c in self.conns)
        cpu0 = time.process_time()
        wall0 = time.monotonic()
        self.latencies = []
        self.latencies_app = []
        self.latency_keys = []
        self.recording = bool(cmd.get("latency", False))
        await _sleep_until(t1)
        self.recording = False
        wall1 = time.monotonic()
        cpu1 = time.process_time()
        for p in self.publishers:
            p.stop()
        per = []
        closed = 0
        for c, b in zip(self.conns, before, strict=False):
            if c.role == "slow":
                continue
            per.append(c.parser.frames - b)
            closed += c.closed
        lat, lat_app, keys = self.latencies, self.latencies_app, self.latency_keys
        self.latencies, self.latencies_app, self.latency_keys = [], [], []
        fast_roles = [c for c in self.conns if c.role != "slow"]
        return {
            "frames": sum(per),
            "bytes": sum(c.parser.bytes for c in self.conns) - bytes0,
            "conns": len(per),
            "zero_conns": sum(1 for x in per if x == 0),
            "min_conn": min(per) if per else 0,
            "max_conn": max(per) if per else 0,
            "closed": closed,
            "lost": sum(1 for c in fast_roles if c.lost_unexpectedly),
            "sent": sum(p.sent for p in self.publishers) - sent0,
            "latencies": lat,
            "latencies_app": lat_app,
            "latency_keys": keys,
            "cpu_s": cpu1 - cpu0,
            "wall_s": wall1 - wall0,
        }

    async def cmd_pause(self, cmd: Cmd) -> Cmd:
        role = str(cmd.get("role", "slow"))
        n = 0
        for c in self.conns:
            if c.role == role and c.transport is not None and not c.closed:
                if cmd.get("resume"):
                    c.transport.resume_reading()
                else:
                    c.transport.pause_reading()
                n += 1
        return {"paused": n}

    async def cmd_mark(self, cmd: Cmd) -> Cmd:
        for c in self.conns:
            c.mark = c.parser.frames
        return {"open": self.open_count()}

    async def cmd_alive(self, cmd: Cmd) -> Cmd:
        """Wait (bounded) until every open connection got a frame since ``mark``."""
        deadline = time.monotonic() + float(cmd.get("timeout", 10.0))
        while True:
            alive = sum(1 for c in self.conns if not c.closed and c.parser.frames > c.mark)
            if alive >= self.open_count() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return {"alive": alive, "open": self.open_count(), "total": len(self.conns)}

    async def cmd_ping(self, cmd: Cmd) -> Cmd:
        """Ping every open connection; count those whose pong comes back in time."""
        conns = [c for c in self.conns if not c.closed]
        marks = [c.parser.pongs for c in conns]
        frame = wsp.encode_frame(b"bench", wsp.OP_PING)
        for c in conns:
            c.send(frame)
        deadline = time.monotonic() + float(cmd.get("timeout", 10.0))
        while True:
            alive = sum(1 for c, m in zip(conns, marks, strict=True) if c.parser.pongs > m)
            if alive >= len(conns) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return {"alive": alive, "open": len(conns)}

    async def cmd_publish_once(self, cmd: Cmd) -> Cmd:
        for p in self.publishers[:1]:
            p.max_messages = p.sent + 1
            p._send(1)
        return {"sent": 1 if self.publishers else 0}

    async def cmd_count(self, cmd: Cmd) -> Cmd:
        """Frames every open connection got since ``mark``, once their sum reaches
        ``expect`` or after ``timeout`` seconds (for delivery checks after a load)."""
        expect = int(cmd.get("expect", 0))
        deadline = time.monotonic() + float(cmd.get("timeout", 5.0))
        while True:
            per = [c.parser.frames - c.mark for c in self.conns if c.role != "pub"]
            if sum(per) >= expect or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        return {"frames": per, "open": self.open_count()}

    async def cmd_api(self, cmd: Cmd) -> Cmd:
        """HTTP load: open ``connections`` keep-alive connections, send ``request`` on each
        in a loop from ``start`` to ``t1`` (at most ``max_requests``); latencies and status
        codes of the responses completed between ``t0`` and ``t1``."""
        loop = asyncio.get_running_loop()
        load = HttpLoad(bytes.fromhex(str(cmd["request"])), int(cmd.get("max_requests", 10**9)))
        n = int(cmd["connections"])
        sources = list(cmd.get("sources", []))
        t1 = float(cmd["t1"])

        async def open_http() -> None:
            local: tuple[str, int] | None = None
            if sources:
                local = (sources[self._src_i % len(sources)], 0)
                self._src_i += 1
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: HttpConn(load), self.host, self.port, local_addr=local
                    ),
                    10.0,
                )
            except Exception as exc:
                load.errors["connect: " + _err_name(exc)] += 1
                return
            load.conns.append(proto)

        await asyncio.gather(*(open_http() for _ in range(n)))
        await _sleep_until(float(cmd["start"]))
        load.start(t1)
        await _sleep_until(float(cmd["t0"]))
        cpu0 = time.process_time()
        sent0, done0 = load.sent, load.done
        load.recording = True
        await _sleep_until(t1)
        load.recording = False
        cpu1 = time.process_time()
        load.active = False
        sent_window, done_window = load.sent - sent0, load.done - done0
        await load.drain(5.0)
        for c in load.conns:
            c.abort()
        return {
            "connections": len(load.conns),
            "sent": load.sent,
            "done": load.done,
            "sent_window": sent_window,
            "done_window": done_window,
            "statuses": {str(k): v for k, v in load.statuses.items()},
            "window_statuses": {str(k): v for k, v in load.window_statuses.items()},
            "errors": dict(load.errors),
            "lost": sum(1 for c in load.conns if c.lost_unexpectedly),
            "latencies": load.latencies,
            "cpu_s": cpu1 - cpu0,
        }

    async def cmd_churn(self, cmd: Cmd) -> Cmd:
        """Open and close connections in a loop until t1 (or max_cycles)."""
        t1 = float(cmd["t1"])
        path = str(cmd.get("path", "/ws/broadcast"))
        sources = list(cmd.get("sources", []))
        hold = float(cmd.get("hold", 0.2))
        parallel = int(cmd.get("parallel", 20))
        max_cycles = int(cmd.get("max_cycles", 1_000_000))
        proto = str(cmd.get("proto", "raw"))
        channel = str(cmd.get("channel", "news"))
        counts: Counter[str] = Counter()

        async def churner() -> None:
            while time.monotonic() < t1 and counts["cycles"] < max_cycles:
                counts["cycles"] += 1
                try:
                    c = await self.open_one(path, "churn", 0, sources, 5.0, proto, channel)
                except Exception as exc:
                    counts["connect_errors"] += 1
                    counts["err:" + _err_name(exc)] += 1
                    await asyncio.sleep(0.05)
                    continue
                counts["connects"] += 1
                await asyncio.sleep(min(hold, max(0.0, t1 - time.monotonic())))
                if c.parser.frames:
                    counts["churners_with_frames"] += 1
                c.close()

        await _sleep_until(float(cmd.get("t0", 0.0)))
        await asyncio.gather(*(churner() for _ in range(parallel)))
        return dict(counts)

    async def cmd_status(self, cmd: Cmd) -> Cmd:
        by_role: Counter[str] = Counter()
        lost: Counter[str] = Counter()
        for c in self.conns:
            by_role[c.role] += not c.closed
            lost[c.role] += c.lost_unexpectedly
        return {
            "open": self.open_count(),
            "total": len(self.conns),
            "open_by_role": dict(by_role),
            "lost_by_role": dict(lost),
            "fd_limit": self.fd_limit,
        }

    async def cmd_close(self, cmd: Cmd) -> Cmd:
        for c in self.conns:
            c.close()
        await asyncio.sleep(0.05)
        for c in self.conns:
            c.abort()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)
        return {"closed": len(self.conns)}

    # command loop -------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        tasks: set[asyncio.Task[None]] = set()

        def on_readable() -> None:
            try:
                cmd = self.pipe.recv()
            except (EOFError, OSError):
                if self.done is not None and not self.done.done():
                    self.done.set_result(None)
                loop.remove_reader(self.pipe.fileno())
                return
            t = loop.create_task(self.dispatch(cmd))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        loop.add_reader(self.pipe.fileno(), on_readable)
        self.pipe.send({"ready": True, "fd_limit": self.fd_limit, "pid": os.getpid()})
        await self.done
        loop.remove_reader(self.pipe.fileno())

    async def dispatch(self, cmd: Cmd) -> None:
        handler = getattr(self, "cmd_" + str(cmd["op"]), None)
        try:
            if handler is None:
                raise ValueError(f"unknown command {cmd['op']!r}")
            reply = await handler(cmd)
        except Exception as exc:  # reported to the coordinator, never swallowed
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        reply["op"] = cmd["op"]
        # The event loop made the pipe non-blocking; a large reply must not fail with EAGAIN.
        os.set_blocking(self.pipe.fileno(), True)
        self.pipe.send(reply)


def sign_tokens(n: int, secret: str, mode: str, worker_id: int) -> list[str]:
    """``n`` HS256 connection tokens: one per connection (``distinct``: each signature is
    checked by the server) or one for all (``same``: the server's verified-token cache)."""
    import jwt  # PyJWT, only where tokens are used

    nonce = os.urandom(4).hex()
    if mode == "same":
        one = jwt.encode({"sub": f"bench-{worker_id}-{nonce}"}, secret, algorithm="HS256")
        return [one] * n
    if mode != "distinct":
        raise ValueError(f"token mode must be distinct or same, not {mode!r}")
    return [
        jwt.encode({"sub": f"bench-{worker_id}-{nonce}-{i}"}, secret, algorithm="HS256")
        for i in range(n)
    ]


def reply_position(reply: bytes) -> tuple[int, str]:
    """``(o, e)`` of a history channel's ``sub`` reply ``{"id":1,"res":{"o":N,"e":E,...}}``."""
    res = json.loads(reply)["res"]
    return int(res["o"]), str(res["e"])


def recovered_order(reply: bytes) -> list[tuple[int, int]]:
    """``(offset, publisher sequence)`` of each publication a recovery reply holds."""
    out = []
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        for p in json.loads(reply)["res"].get("pubs", []):
            data = json.dumps(p.get("d"), separators=(",", ":")).encode()
            head = wsp.v1_headers([data])
            seq = wsp.PAYLOAD_HEADER.unpack(head[0])[2] if head else -1
            out.append((int(p.get("o", -1)), seq))
    return out


def check_recovery(reply: bytes, since: tuple[int, str] | None, expect: int) -> str:
    """Why a recovery reply is not exactly the ``expect`` publications after ``since``, in
    order (offsets and the publisher's sequence numbers); ``""`` when it is."""
    if not reply or since is None:
        return "no reply"
    res = json.loads(reply).get("res")
    if res is None:
        return "error reply"
    if res.get("recovered") is not True:
        return "not recovered"
    pubs = res.get("pubs", [])
    if len(pubs) != expect:
        return f"{len(pubs)} publications"
    if [p.get("o") for p in pubs] != list(range(since[0] + 1, since[0] + 1 + expect)):
        return "offsets out of order"
    seqs = []
    for p in pubs:
        head = wsp.v1_headers([json.dumps(p.get("d"), separators=(",", ":")).encode()])
        if not head:
            return "data without header"
        seqs.append(wsp.PAYLOAD_HEADER.unpack(head[0])[2])
    if seqs != list(range(seqs[0], seqs[0] + expect)):
        return "sequence out of order"
    return ""


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _err_name(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}[{exc.errno}]"
    return type(exc).__name__


def worker_main(
    pipe: Connection, worker_id: int, host: str, port: int, cpus: list[int] | None
) -> None:
    """Entry point of a client process."""
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)
    worker = Worker(pipe, worker_id, host, port)
    try:
        import uvloop
    except ImportError:
        asyncio.run(worker.run())
    else:
        uvloop.run(worker.run())
