"""The demo page fits a phone: no sideways scrolling at 320, 360 and 390 px, in real Chromium.

Checked before and after connecting the raw tester (the socket URL and a long unbroken
message are the widest things the page shows), and with the chat joined. Screenshots land
in test-output/page_mobile/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.browser import chromium
from tests.support.servers import OUTPUT, ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SHOTS = OUTPUT / "page_mobile"
WIDTHS = [320, 360, 390]

OVERFLOW = """() => {
    const width = window.innerWidth;
    const wide = [...document.querySelectorAll("body *")]
        .filter((el) => el.getBoundingClientRect().right > width + 0.5)
        .map((el) => (el.id ? "#" + el.id : el.tagName.toLowerCase() + "." + el.className)
            + " right=" + Math.round(el.getBoundingClientRect().right));
    return {scroll: document.documentElement.scrollWidth, inner: width, wide: wide};
}"""


@pytest.fixture(scope="module")
def page_server() -> Iterator[str]:
    server = ServerProcess().start()
    yield server.base
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _assert_fits(page: Page, width: int, what: str) -> None:
    result: dict[str, Any] = page.evaluate(OVERFLOW)
    # A mobile browser widens the layout viewport to fit wide content, which would hide
    # the overflow; so the window must still be as wide as the phone.
    assert result["inner"] == width, f"{what}: {result}"
    assert result["scroll"] <= result["inner"], f"{what}: {result}"


@pytest.mark.parametrize("width", WIDTHS)
def test_the_page_fits_a_phone_without_sideways_scrolling(
    browser: Browser, page_server: str, width: int
) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(
        viewport={"width": width, "height": 780}, device_scale_factor=2, is_mobile=True
    )
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(page_server + "/")
        expect(page.locator("#stats-state")).to_have_attribute("data-state", "live")
        _assert_fits(page, width, "before connecting")

        page.fill("#channel", "a-rather-long-channel-name-for-a-phone-0123456789")
        page.click("#connect-btn")
        expect(page.locator("#status")).to_have_attribute("data-state", "open")
        page.fill("#message-input", "x" * 200)  # one long word: must wrap, not widen
        page.press("#message-input", "Enter")
        expect(page.locator('#log li[data-kind="received"]')).to_have_count(1)
        _assert_fits(page, width, "connected")
        page.screenshot(path=str(SHOTS / f"page_{width}px.png"), full_page=True)

        # The chat, joined, with a long channel name and one long word.
        page.fill("#chat-name", "Ada")
        page.click("#join-btn")
        expect(page.locator("#chat-status")).to_have_attribute("data-state", "open")
        page.fill("#new-channel", "chat.a-rather-long-channel-name-for-a-phone-0123456789")
        page.press("#new-channel", "Enter")
        page.fill("#chat-input", "y" * 200)
        page.press("#chat-input", "Enter")
        expect(page.locator('#chat-log li[data-kind="mine"]')).to_have_count(1)
        _assert_fits(page, width, "chat joined")
        page.screenshot(path=str(SHOTS / f"chat_{width}px.png"), full_page=True)
    finally:
        context.close()
