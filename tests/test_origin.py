"""FANOUT_ALLOWED_ORIGINS: a page from elsewhere cannot open a socket (403), in real Chromium too.

A browser sends the page's origin with every WebSocket handshake and enforces nothing
itself, so without the check any site a visitor opens could talk to Fanout as that visitor
(cross-site WebSocket hijacking). Non-browser clients send no Origin and pass, unless
FANOUT_REQUIRE_ORIGIN=true.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from app.config import Settings, SettingsError
from app.services.origins import OriginPolicy
from tests.support.browser import chromium
from tests.support.clients import assert_still_serving
from tests.support.protocol import SUBPROTOCOL
from tests.support.servers import OUTPUT, SERVERS, ServerKind, ServerProcess, StartServer
from tests.support.stats import fetch_stats

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ALLOWED = "https://app.example.com, https://*.example.com, http://localhost:8080"
SOCKET_PATHS = ["/ws/echo", "/ws/broadcast", "/ws/broadcast/news", "/ws?proto=fanout.v1"]


# -- the policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://APP.Example.com", True),  # hosts compare case-insensitively
        ("https://app.example.com:443", True),  # the default port, written out
        ("https://a.example.com", True),  # the wildcard: one label
        ("https://a.b.example.com", True),  # or more
        ("http://localhost:8080", True),
        ("https://example.com", False),  # the wildcard needs a label before the domain
        ("https://evilexample.com", False),
        ("https://app.example.com.evil.net", False),
        ("http://app.example.com", False),  # scheme exact
        ("https://app.example.com:8443", False),  # port exact
        ("http://localhost:8081", False),
        ("http://localhost", False),
        ("null", False),  # sandboxed frames and file: pages
        ("", False),
        ("https://user@app.example.com", False),
        ("https://app.example.com/path", False),  # browsers never send one: not an origin
    ],
)
def test_an_origin_is_allowed_when_listed_exactly_or_under_a_wildcard(
    origin: str, allowed: bool
) -> None:
    assert OriginPolicy.from_setting(ALLOWED).allows(origin) is allowed


def test_without_a_list_every_origin_passes_and_a_missing_origin_passes_unless_required() -> None:
    open_policy = OriginPolicy.from_setting("")
    assert not open_policy.restricts
    assert open_policy.allows("https://anywhere.example") and open_policy.allows(None)
    assert OriginPolicy.from_setting(ALLOWED).allows(None)
    required = OriginPolicy.from_setting("", require=True)
    assert required.restricts
    assert not required.allows(None) and required.allows("https://anywhere.example")
    listed_and_required = OriginPolicy.from_setting(ALLOWED, require=True)
    assert not listed_and_required.allows(None)
    assert listed_and_required.allows("https://app.example.com")


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("https://app.example.com/path", "'https://app.example.com/path' is not an origin"),
        ("app.example.com", "'app.example.com' is not an origin"),
        ("https://app.example.com,ftp//x", "'ftp//x' is not an origin"),
        ("https://a*.example.com", "a wildcard is only allowed as the first label"),
        ("https://*.", "expected a domain after '*.'"),
        ("*", "leave the setting empty to allow every origin"),
    ],
)
def test_a_bad_origin_list_is_a_one_line_settings_error(value: str, names: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"FANOUT_ALLOWED_ORIGINS": value})
    message = str(info.value)
    assert message.startswith(f"FANOUT_ALLOWED_ORIGINS={value!r}: ")
    assert names in message and "\n" not in message
    with pytest.raises(SettingsError, match="FANOUT_REQUIRE_ORIGIN"):
        Settings.from_env({"FANOUT_REQUIRE_ORIGIN": "maybe"})


def test_a_trailing_slash_and_a_default_port_in_the_list_are_forgiven() -> None:
    policy = OriginPolicy.from_setting("https://app.example.com/,http://b.example.com:80")
    assert policy.allows("https://app.example.com") and policy.allows("http://b.example.com")


# -- real servers -------------------------------------------------------------------------


async def _refused_status(url: str, origin: str | None = None) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, origin=websockets.Origin(origin) if origin else None):
            pass
    return int(info.value.response.status_code)


async def _opens(url: str, origin: str | None = None) -> None:
    async with websockets.connect(
        url,
        origin=websockets.Origin(origin) if origin else None,
        subprotocols=[websockets.Subprotocol(SUBPROTOCOL)] if url.endswith("/ws") else None,
    ) as ws:
        if "/ws/echo" in url or "/ws/broadcast" in url:
            await ws.send("hi")
            assert await ws.recv() == "hi"


async def test_a_page_from_another_origin_gets_403_on_every_socket_path(
    start_server: StartServer,
) -> None:
    server = start_server({"FANOUT_ALLOWED_ORIGINS": ALLOWED})
    for path in SOCKET_PATHS:
        assert await _refused_status(server.ws(path), "https://evil.example.net") == 403
    stats = await fetch_stats(server)
    assert stats["rejected"] == {"origin": len(SOCKET_PATHS)}
    assert stats["http_errors"].get("403", 0) == 0  # handshake refusals are counted apart
    # One line per refusal, naming the origin (quoted: a header is the client's text).
    lines = [line for line in server.log().splitlines() if "fanout[" in line and "rejec" in line]
    assert len(lines) == len(SOCKET_PATHS), lines
    assert all(
        "origin (Origin 'https://evil.example.net' not allowed)" in line for line in lines
    ), lines
    await assert_still_serving(server)  # no Origin: a non-browser client passes


async def test_listed_origins_and_clients_without_an_origin_connect(
    start_server: StartServer,
) -> None:
    server = start_server({"FANOUT_ALLOWED_ORIGINS": ALLOWED})
    for origin in ("https://app.example.com", "https://chat.eu.example.com", None):
        await _opens(server.ws("/ws/broadcast"), origin)
        await _opens(server.ws("/ws"), origin)
    assert (await fetch_stats(server))["rejected"] == {}


async def test_a_header_that_tries_to_forge_a_log_line_is_quoted(
    start_server: StartServer,
) -> None:
    server = start_server({"FANOUT_ALLOWED_ORIGINS": ALLOWED})
    forged = "https://evil.example.net\tINFO fanout: all good"
    assert await _refused_status(server.ws("/ws/echo"), forged) == 403
    assert "Origin 'https://evil.example.net\\tINFO fanout: all good' not" in server.log()


async def test_require_origin_refuses_clients_without_one(start_server: StartServer) -> None:
    server = start_server({"FANOUT_REQUIRE_ORIGIN": "true"})
    assert await _refused_status(server.ws("/ws/echo")) == 403
    await _opens(server.ws("/ws/echo"), "https://anything.example")  # no list: any origin
    stats = await fetch_stats(server)
    assert stats["rejected"] == {"origin": 1}
    assert "rejected /ws/echo from 127.0.0.1" in server.log()
    assert "origin (no Origin header)" in server.log()


@pytest.fixture(params=list(SERVERS))
def any_server_kind(request: pytest.FixtureRequest) -> Iterator[ServerKind]:
    yield SERVERS[request.param]


async def test_every_server_answers_a_foreign_origin_with_403(
    any_server_kind: ServerKind,
) -> None:
    kind = any_server_kind
    server = ServerProcess({"FANOUT_ALLOWED_ORIGINS": ALLOWED}, kind.args, kind.program).start()
    try:
        assert await _refused_status(server.ws("/ws/broadcast"), "https://evil.example.net") == 403
        await _opens(server.ws("/ws/broadcast"), "https://app.example.com")
        assert (await fetch_stats(server))["rejected"] == {"origin": 1}
    finally:
        server.stop()


async def test_the_open_default_lets_every_origin_in(server: ServerProcess) -> None:
    """Unset, nothing changes for anyone: on uvicorn (both protocols) and hypercorn."""
    await _opens(server.ws("/ws/broadcast"), "https://evil.example.net")
    await _opens(server.ws("/ws"), "https://evil.example.net")
    assert "origin" not in (await fetch_stats(server))["rejected"]


# -- real Chromium ------------------------------------------------------------------------

TIMEOUT_MS = 10_000

PROBE = """(url) => new Promise((resolve) => {
    const ws = new WebSocket(url);
    let opened = false;
    ws.onopen = () => { opened = true; ws.send("from the page"); };
    ws.onmessage = (event) => { resolve({opened, echoed: event.data}); ws.close(); };
    ws.onclose = (event) => resolve({opened, code: event.code});
})"""
"""What a page's script does: open the socket, send, and report what happened."""

PAGE = f"""<!doctype html>
<title>another site</title>
<script>
  const probe = {PROBE};
  window.result = probe(new URLSearchParams(location.search).get("ws"));
</script>
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[str]:
    """A plain static web server on another port (another origin) serving the probe page."""
    (tmp_path / "probe.html").write_text(PAGE)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="other-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fanout_allowing_itself() -> Iterator[ServerProcess]:
    """A Fanout server whose allowlist holds exactly its own origin."""
    for _ in range(3):
        server = ServerProcess()
        own = f"http://127.0.0.1:{server.port}"
        server.env["FANOUT_ALLOWED_ORIGINS"] = own
        server.start()
        if server.port == int(own.rsplit(":", 1)[1]):
            break
        server.stop()  # its port was taken and it moved: the list names the wrong origin
    else:
        pytest.fail("could not start a server on the port its allowlist names")
    yield server
    server.stop()


def _page(browser: Browser) -> Page:
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def test_chromium_page_from_another_origin_is_refused_and_from_fanouts_own_connects(
    browser: Browser, other_site: str, fanout_allowing_itself: ServerProcess
) -> None:
    server = fanout_allowing_itself
    socket_url = server.ws("/ws/broadcast")
    shots = OUTPUT / "origin"
    shots.mkdir(parents=True, exist_ok=True)

    # The page of another site: its script's socket fails, the server counts why.
    foreign = _page(browser)
    foreign.goto(f"{other_site}/probe.html?ws={socket_url}")
    refused = foreign.evaluate("() => window.result")
    foreign.screenshot(path=str(shots / "foreign.png"))
    assert refused == {"opened": False, "code": 1006}, refused
    assert server.stats()["rejected"] == {"origin": 1}
    assert f"origin (Origin '{other_site}' not allowed)" in server.log()

    # The same script on a page of Fanout's own origin (the demo page) connects and echoes.
    own = _page(browser)
    own.goto(f"{server.base}/")
    accepted = own.evaluate(PROBE, socket_url)
    own.screenshot(path=str(shots / "own.png"))
    assert accepted == {"opened": True, "echoed": "from the page"}, accepted
    stats = server.stats()
    assert stats["rejected"] == {"origin": 1}
    assert stats["messages"]["received"] == 1
