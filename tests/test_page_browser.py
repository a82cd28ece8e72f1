"""Drive the demo page (GET /) in headless Chromium with Playwright.

Two browser contexts (two "people") connect to the broadcast socket; one sends, both
logs show the message, and the live connection count on the page follows along.
Screenshots land in test-output/page_browser/ at the repo root for review.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.browser import chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT_DIR = REPO_ROOT / "test-output" / "page_browser"
TIMEOUT_MS = 10_000
MAX_MESSAGE_BYTES = 4096  # small, so one test can provoke close code 1009 from the page


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _uvicorn(log_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real uvicorn serving app.main:app on a free loopback port: (base URL, process)."""
    port = _free_port()
    env = {
        **os.environ,
        "FANOUT_STATS_LOG_INTERVAL": "0",
        "FANOUT_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
    }
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"uvicorn exited early (rc={proc.returncode}):\n{log_path.read_text()}",
                    pytrace=False,
                )
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"server not healthy after 20 s:\n{log_path.read_text()}", pytrace=False
                )
            time.sleep(0.1)
        yield base, proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID and wait for the exit; SIGKILL only if it hangs."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server shared by this module's tests; yields its base URL."""
    with _uvicorn(tmp_path_factory.mktemp("uvicorn") / "server.log") as (base, _proc):
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


class PageProbe:
    """One open demo page, recording page errors and every request it makes."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1000, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "console",
            lambda msg: self.errors.append(msg.text) if msg.type == "error" else None,
        )
        self.page.on("request", lambda req: self.requests.append(req.url))
        response = self.page.goto(base + "/")
        assert response is not None and response.status == 200

    def log_entries(self, kind: str, text: str) -> Locator:
        return self.page.locator(f'#log li[data-kind="{kind}"]', has_text=text)

    def close(self) -> None:
        self.context.close()


def _connect(probe: PageProbe, endpoint: str = "broadcast") -> None:
    from playwright.sync_api import expect

    page = probe.page
    page.select_option("#endpoint", endpoint)
    expect(page.locator("#connect-btn")).to_have_text("Connect")
    page.click("#connect-btn")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#message-input")).to_be_enabled()
    expect(page.locator("#connect-btn")).to_have_text("Disconnect")


def test_two_pages_broadcast_and_live_count(browser: Browser, page_server: str) -> None:
    from playwright.sync_api import expect

    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    a = PageProbe(browser, page_server)
    b = PageProbe(browser, page_server)
    try:
        for probe in (a, b):
            page = probe.page
            expect(page).to_have_title(re.compile("Fanout"))
            # /stats polling works before any socket is open.
            expect(page.locator("#stats-state")).to_have_attribute("data-state", "live")
            expect(page.locator("#stat-connections")).to_have_text("0")
            expect(page.locator("#ws-url")).to_have_text(
                page_server.replace("http://", "ws://") + "/ws/broadcast"
            )

        _connect(a)
        _connect(b)

        # Both pages see the live connection count (polled from /stats) reach 2.
        for probe in (a, b):
            expect(probe.page.locator("#stat-connections")).to_have_text("2")
            expect(probe.page.locator("#stat-broadcast")).to_have_text("2")
            expect(probe.page.locator("#stat-echo")).to_have_text("0")

        text = f"hello from A {uuid.uuid4().hex[:8]}"
        a.page.fill("#message-input", text)
        a.page.press("#message-input", "Enter")  # Enter sends
        expect(a.page.locator("#message-input")).to_have_value("")

        # A logs its own send plus the broadcast copy; B receives it exactly once.
        expect(a.log_entries("sent", text)).to_have_count(1)
        expect(a.log_entries("received", text)).to_have_count(1)
        expect(b.log_entries("received", text)).to_have_count(1)
        expect(b.log_entries("sent", text)).to_have_count(0)

        # Timestamps are HH:MM:SS.mmm.
        ts = b.log_entries("received", text).locator("time").inner_text()
        assert re.fullmatch(r"\d{2}:\d{2}:\d{2}\.\d{3}", ts), ts

        # Text is rendered as text, never as HTML.
        tricky = f"<b>not bold</b> & {uuid.uuid4().hex[:6]}"
        b.page.fill("#message-input", tricky)
        b.page.click("#send-btn")
        expect(a.log_entries("received", tricky)).to_have_count(1)
        assert a.page.locator("#log b").count() == 0

        # The delivered counter moves: 2 messages x 2 receivers (more if the server is shared).
        expect(a.page.locator("#stat-delivered")).to_have_text(
            re.compile(r"^(?:[4-9]|[1-9][0-9,]+)$")
        )

        a.page.screenshot(path=str(OUTPUT_DIR / "page_a_connected.png"), full_page=True)
        b.page.screenshot(path=str(OUTPUT_DIR / "page_b_connected.png"), full_page=True)

        # B disconnects: its log explains the close code, A's count drops back to 1.
        b.page.click("#connect-btn")
        expect(b.page.locator("#status")).to_have_attribute("data-state", "disconnected")
        expect(b.log_entries("system", "Closed: 1000 normal closure")).to_have_count(1)
        expect(b.page.locator("#message-input")).to_be_disabled()
        expect(a.page.locator("#stat-connections")).to_have_text("1")
        expect(b.page.locator("#stat-connections")).to_have_text("1")

        a.page.screenshot(path=str(OUTPUT_DIR / "page_a_after_b_left.png"), full_page=True)
        b.page.screenshot(path=str(OUTPUT_DIR / "page_b_disconnected.png"), full_page=True)

        # The page loads nothing from anywhere but its own origin (works offline).
        for probe in (a, b):
            foreign = [u for u in probe.requests if not u.startswith((page_server, "data:"))]
            assert foreign == [], foreign
            assert probe.errors == [], probe.errors
    finally:
        a.close()
        b.close()


def test_echo_roundtrip_and_count_returns_to_zero(browser: Browser, page_server: str) -> None:
    from playwright.sync_api import expect

    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    p = PageProbe(browser, page_server)
    try:
        page = p.page
        page.select_option("#endpoint", "echo")
        expect(page.locator("#channel")).to_be_disabled()
        expect(page.locator("#ws-url")).to_have_text(re.compile(r"^ws://127\.0\.0\.1:\d+/ws/echo$"))
        _connect(p, "echo")
        expect(page.locator("#stat-echo")).to_have_text("1")

        text = f"echo {uuid.uuid4().hex[:8]}"
        page.fill("#message-input", text)
        page.press("#message-input", "Enter")
        expect(p.log_entries("sent", text)).to_have_count(1)
        expect(p.log_entries("received", text)).to_have_count(1)

        page.click("#connect-btn")
        expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
        expect(page.locator("#stat-connections")).to_have_text("0")
        page.screenshot(path=str(OUTPUT_DIR / "page_echo.png"), full_page=True)
        assert p.errors == [], p.errors
    finally:
        p.close()


def test_close_code_explained_and_auto_reconnect_visible(
    browser: Browser, page_server: str
) -> None:
    from playwright.sync_api import expect

    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    p = PageProbe(browser, page_server)
    try:
        page = p.page
        page.check("#auto-reconnect")
        _connect(p, "echo")

        # One message over FANOUT_MAX_MESSAGE_BYTES: the server closes with 1009 and the
        # log says what that means.
        page.fill("#message-input", "x" * (MAX_MESSAGE_BYTES + 1))
        page.press("#message-input", "Enter")
        expect(p.log_entries("error", "Closed: 1009 message too big")).to_have_count(1)

        # Auto-reconnect is visible in the log and brings the socket back.
        expect(p.log_entries("system", "Reconnecting in")).to_have_count(1)
        expect(p.log_entries("system", "Connected to echo")).to_have_count(2)
        expect(page.locator("#status")).to_have_attribute("data-state", "open")
        page.screenshot(path=str(OUTPUT_DIR / "page_close_code.png"), full_page=True)

        # A user disconnect never triggers a reconnect.
        page.click("#connect-btn")
        expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
        page.wait_for_timeout(1500)
        expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
        expect(p.log_entries("system", "Reconnecting in")).to_have_count(1)
        assert p.errors == [], p.errors
    finally:
        p.close()


def test_server_shutdown_close_code_explained(browser: Browser, tmp_path: Path) -> None:
    """SIGTERM while a page is connected: the page explains the server's close code."""
    from playwright.sync_api import expect

    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    with _uvicorn(tmp_path / "server.log") as (base, proc):
        p = PageProbe(browser, base)
        try:
            _connect(p)
            _stop(proc)
            assert proc.returncode is not None
            page = p.page
            expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
            expect(p.log_entries("error", "Closed: 1012 server restarting")).to_have_count(1)
            # The stats poller notices the server is gone instead of showing stale numbers.
            expect(page.locator("#stats-state")).to_have_attribute("data-state", "stale")
            page.screenshot(path=str(OUTPUT_DIR / "page_server_stopped.png"), full_page=True)
        finally:
            p.close()


def test_chromium_with_permessage_deflate_decodes_fast_path_frames(
    browser: Browser, page_server: str
) -> None:
    """Chromium negotiates permessage-deflate; the direct path's uncompressed frames decode."""
    probe = PageProbe(browser, page_server)
    try:
        result = probe.page.evaluate(
            """async () => {
                const url = location.origin.replace(/^http/, "ws") + "/ws/broadcast/deflate";
                const ws = new WebSocket(url);
                await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
                const got = [];
                // This server's message limit is 4096 bytes.
                const want = ["a".repeat(3000), "héllo ✓", "z".repeat(4000)];
                const done = new Promise((ok) => {
                    ws.onmessage = (e) => {
                        got.push(e.data);
                        if (got.length === want.length) ok();
                    };
                });
                for (const m of want) ws.send(m);
                await done;
                ws.close();
                const same = JSON.stringify(got) === JSON.stringify(want);
                return {extensions: ws.extensions, same};
            }"""
        )
        assert "permessage-deflate" in result["extensions"]
        assert result["same"] is True
        assert probe.errors == []
    finally:
        probe.close()
