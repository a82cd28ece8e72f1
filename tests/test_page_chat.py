"""The demo page's chat, built on the JavaScript SDK, in headless Chromium.

Two people chat; a page reloaded while messages flow keeps working; the presence list; a
page whose server is killed and restarted (on its history file) recovers what it missed.
The server runs with channel rules that ask for history and presence on ``chat.*``: the
parts that need them skip, naming why, only while the server answers 404 "not available"
for ``history``/``presence``, so they run as soon as those features land. Screenshots land
in test-output/page_chat/.
"""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from websockets import Subprotocol

from tests.support.browser import chromium
from tests.support.servers import OUTPUT, ROOT, PortTaken, ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

SHOTS = OUTPUT / "page_chat"
TIMEOUT_MS = 10_000
RULES = """
[[channels]]
match = "chat.*"
subscribe = "any"
publish = "subscribers"
presence = true
join_leave = true
history_size = 200
history_ttl = 600
"""


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    rules = tmp_path_factory.mktemp("rules") / "fanout.toml"
    rules.write_text(RULES)
    server = ServerProcess(env={"FANOUT_CONFIG": str(rules)}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _missing(server: ServerProcess, op: str) -> str | None:
    """The server's message when it answers ``op`` with 404 "not available", else None.
    (A blocking client: Playwright's sync API already runs an event loop in this thread.)"""
    from websockets.sync.client import connect

    with connect(server.ws("/ws"), subprotocols=[Subprotocol("fanout.v1")]) as ws:
        ws.send(json.dumps({"id": 1, "op": "sub", "ch": "chat.probe"}))
        ws.send(json.dumps({"id": 2, "op": op, "ch": "chat.probe"}))
        while True:
            reply = json.loads(ws.recv(timeout=10))
            if reply.get("id") == 2:
                break
    error = reply.get("error")
    if error and error["code"] == 404 and "not available" in error["message"]:
        return str(error["message"])
    return None


class Person:
    """One browser context on the demo page, recording errors and foreign requests."""

    def __init__(self, browser: Browser, base: str, width: int = 1000) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on(
            "request",
            lambda r: (
                None if r.url.startswith((base, "ws://127.0.0.1")) else self.foreign.append(r.url)
            ),
        )

    def join(self, name: str, channel: str) -> None:
        from playwright.sync_api import expect

        self.page.goto(f"{self.base}/?chat={channel}")
        self.page.fill("#chat-name", name)
        self.page.click("#join-btn")
        expect(self.page.locator("#chat-status")).to_have_attribute("data-state", "open")
        expect(self.page.locator(f'.tab[data-channel="{channel}"]')).to_have_attribute(
            "aria-selected", "true"
        )

    def say(self, text: str) -> None:
        self.page.fill("#chat-input", text)
        self.page.press("#chat-input", "Enter")

    def said(self, text: str, kind: str = "theirs") -> Locator:
        return self.page.locator(f'#chat-log li[data-kind="{kind}"]', has_text=text)

    def close(self) -> None:
        self.context.close()


def _channel() -> str:
    return "chat." + uuid.uuid4().hex[:8]


def test_two_pages_chat_each_sees_the_other(browser: Browser, chat_server: ServerProcess) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    channel = _channel()
    ada, bob = Person(browser, chat_server.base), Person(browser, chat_server.base)
    try:
        ada.join("Ada", channel)
        bob.join("Bob", channel)
        ada.say("hello Bob")
        expect(bob.said("hello Bob")).to_have_count(1)
        expect(bob.said("hello Bob").locator(".chat-who")).to_have_text("Ada")
        expect(ada.said("hello Bob", "mine")).to_have_count(1)
        bob.say("<b>hi</b> Ada")
        expect(ada.said("<b>hi</b> Ada")).to_have_count(1)
        assert ada.page.locator("#chat-log b").count() == 0  # text, never HTML
        # The chat's sockets are fanout.v1 sockets in the stats card.
        expect(ada.page.locator("#stat-ws")).to_have_text("2")

        # A second channel: a tab of its own, an unread badge on the other side.
        other = _channel()
        bob.page.fill("#new-channel", other)
        bob.page.press("#new-channel", "Enter")
        expect(bob.page.locator(f'.tab[data-channel="{other}"]')).to_have_attribute(
            "aria-selected", "true"
        )
        ada.page.fill("#new-channel", other)
        ada.page.press("#new-channel", "Enter")
        ada.page.click(f'.tab[data-channel="{channel}"]')
        bob.say("over here")
        expect(ada.page.locator(f'.tab[data-channel="{other}"] .badge')).to_have_text("1")
        ada.page.click(f'.tab[data-channel="{other}"]')
        expect(ada.said("over here")).to_have_count(1)
        ada.page.click(f'.tab[data-channel="{channel}"]')
        expect(ada.said("hello Bob", "mine")).to_have_count(1)

        ada.page.screenshot(path=str(SHOTS / "chat_ada.png"), full_page=True)
        for person in (ada, bob):
            assert person.errors == [], person.errors
            assert person.foreign == [], person.foreign
    finally:
        ada.close()
        bob.close()


PUBLISHER = """async ([channel, count]) => {
    const { Fanout } = await import("/sdk/fanout.js");
    const bot = new Fanout(location.origin.replace(/^http/, "ws") + "/ws");
    bot.connect();
    const sub = bot.subscribe(channel);
    await new Promise((ok) => sub.once("subscribed", ok));
    window.botDone = (async () => {
        for (let i = 1; i <= count; i++) {
            await bot.publish(channel, { name: "bot", text: "tick " + i + ".", client: "bot" });
            await new Promise((ok) => setTimeout(ok, 40));
        }
        return true;
    })();
}"""


def _reload_during_messages(browser: Browser, server: ServerProcess, count: int) -> Person:
    """Bob reloads while a publisher sends ``count`` messages; returns Bob's page (open)."""
    from playwright.sync_api import expect

    channel = _channel()
    bot = Person(browser, server.base)
    bob = Person(browser, server.base)
    try:
        bob.join("Bob", channel)
        bot.page.goto(server.base + "/")
        bot.page.evaluate(PUBLISHER, [channel, count])
        expect(bob.said("tick 3.")).to_have_count(1)
        bob.page.reload()
        expect(bob.page.locator("#chat-status")).to_have_attribute("data-state", "open")
        bot.page.wait_for_function("() => window.botDone", timeout=30_000)
        bot.page.evaluate("() => window.botDone")
        # What Bob saw before the reload is still on the page.
        expect(bob.said("tick 1.")).to_have_count(1)
        # And the page still chats after it.
        bob.say("still here")
        expect(bob.said("still here", "mine")).to_have_count(1)
        assert bob.errors == [], bob.errors
        return bob
    finally:
        bot.close()


def test_a_page_reloaded_during_messages_keeps_working(
    browser: Browser, chat_server: ServerProcess
) -> None:
    from playwright.sync_api import expect

    bob = _reload_during_messages(browser, chat_server, 30)
    try:
        expect(bob.said("tick 30.")).to_have_count(1)
        bob.page.screenshot(path=str(SHOTS / "chat_reloaded.png"), full_page=True)
    finally:
        bob.close()


def test_a_page_reloaded_during_messages_recovers_every_one_once(
    browser: Browser, chat_server: ServerProcess
) -> None:
    from playwright.sync_api import expect

    why = _missing(chat_server, "history")
    if why:
        pytest.skip(f"the server has no history yet ({why}): nothing to recover from")
    bob = _reload_during_messages(browser, chat_server, 30)
    try:
        for i in range(1, 31):
            expect(bob.said(f"tick {i}.")).to_have_count(1)
        expect(bob.page.locator("#chat-log li", has_text=re.compile("recovered"))).to_have_count(1)
    finally:
        bob.close()


def test_the_presence_list_follows_who_is_here(
    browser: Browser, chat_server: ServerProcess
) -> None:
    from playwright.sync_api import expect

    why = _missing(chat_server, "presence")
    if why:
        pytest.skip(f"the server has no presence yet ({why})")
    channel = _channel()
    ada, bob = Person(browser, chat_server.base), Person(browser, chat_server.base)
    try:
        ada.join("Ada", channel)
        expect(ada.page.locator("#presence")).to_be_visible()
        expect(ada.page.locator("#presence-list li")).to_have_count(1)
        bob.join("Bob", channel)
        expect(ada.page.locator("#presence-list li")).to_have_count(2)
        expect(bob.page.locator("#presence-list li")).to_have_count(2)
        joined = re.compile(r" joined$")  # not "Joined chat.x", Ada's own line
        expect(ada.page.locator("#chat-log li .chat-text", has_text=joined)).to_have_count(1)
        bob.say("I am Bob")
        expect(ada.page.locator("#presence-list li", has_text="Bob")).to_have_count(1)
        ada.page.screenshot(path=str(SHOTS / "chat_presence.png"), full_page=True)
        bob.page.click("#join-btn")  # Leave
        expect(ada.page.locator("#presence-list li")).to_have_count(1)
        expect(ada.page.locator("#chat-log li", has_text="Bob left")).to_have_count(1)
    finally:
        ada.close()
        bob.close()


API_KEY = "page-chat-key"


def _restart_on_same_port(server: ServerProcess) -> None:
    for _ in range(50):
        try:
            server._start(20.0)  # the same port: the page finds the server where it was
            return
        except PortTaken:  # the killed server's socket may linger for a moment
            time.sleep(0.1)
    raise AssertionError("could not restart on the same port")


def test_a_page_recovers_what_was_published_while_its_server_was_killed_and_restarted(
    browser: Browser, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # The demo's own rules, and a history file of this test's own, as the README runs it.
    env = {
        "FANOUT_CONFIG": str(ROOT / "examples" / "chat.toml"),
        "FANOUT_HISTORY_FILE": str(tmp_path / "history.sqlite3"),
        "FANOUT_API_KEYS": API_KEY,
    }
    server = ServerProcess(env).start()
    channel = _channel()
    ada = Person(browser, server.base)
    try:
        # The page's timers run on a clock the test may move forward (installed before
        # the page loads); it flows as usual until then.
        ada.page.clock.install()
        ada.join("Ada", channel)
        ada.say("before the crash")
        expect(ada.said("before the crash", "mine")).to_have_count(1)
        ada.page.evaluate("() => { window.sameDocument = true; }")

        server.stop(signal.SIGKILL)  # by PID: a crash
        status = ada.page.locator("#chat-status")
        expect(status).to_have_attribute("data-state", "reconnecting")
        # Published while the page cannot reach its server: by another server on the same
        # history file (on its own port), stopped before the page's server comes back.
        meanwhile = ServerProcess(env).start()
        try:
            for i in (1, 2, 3):
                httpx.post(
                    f"{meanwhile.base}/api/publish",
                    headers={"X-API-Key": API_KEY},
                    json={"channel": channel, "data": {"name": "Bob", "text": f"missed {i}."}},
                    timeout=10,
                ).raise_for_status()
        finally:
            meanwhile.stop()
        _restart_on_same_port(server)
        # The page's next attempt may be up to FANOUT's maxReconnectDelay (20 s) away: move
        # its clock past it, as a laptop opened after a while would.
        ada.page.clock.fast_forward(20_000)
        expect(status).to_have_attribute("data-state", "open")

        for i in (1, 2, 3):
            expect(ada.said(f"missed {i}.")).to_have_count(1)
        recovered = ada.page.locator("#chat-log li", has_text="3 missed messages recovered")
        expect(recovered).to_have_count(1)
        said = ada.page.locator('#chat-log li:not([data-kind="system"]) .chat-text')
        assert said.all_text_contents() == [
            "before the crash",
            "missed 1.",
            "missed 2.",
            "missed 3.",
        ]
        assert ada.page.evaluate("() => window.sameDocument") is True  # not reloaded
        ada.say("after the restart")
        expect(ada.said("after the restart", "mine")).to_have_count(1)
        SHOTS.mkdir(parents=True, exist_ok=True)
        ada.page.screenshot(path=str(SHOTS / "chat_restart.png"), full_page=True)
        # Chromium reports each refused attempt (the socket's, the stats card's) as a
        # console error; nothing else may fail.
        refused = "net::ERR_CONNECTION_REFUSED"
        assert [e for e in ada.errors if refused not in e] == [], ada.errors
    finally:
        ada.close()
        server.stop()
