"""FANOUT_ADMIN_KEY: with it set, /stats and /metrics answer only requests that present it.

Real servers, real HTTP requests; the demo page in real Chromium. Without the key set both
endpoints stay open, as before; /healthz is always open.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.config import Settings, SettingsError
from tests.support.browser import chromium
from tests.support.servers import ServerProcess, StartServer
from tests.support.waiting import wait_for

KEY = "k3y-for-the-admin-test_0123456789"
GUESS = "guessed-key-9876"
ADMIN_PATHS = ("/stats", "/metrics")
REFUSAL = {"error": {"code": 401, "message": "admin key required"}}


@pytest.fixture(scope="module")
def keyed() -> Iterator[ServerProcess]:
    """One server with the admin key set, shared by this module's tests."""
    server = ServerProcess({"FANOUT_ADMIN_KEY": KEY}).start()
    yield server
    server.stop()


def _get(server: ServerProcess, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{server.base}{path}", headers=headers, timeout=5.0)


def _refusals_logged(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if "admin key" in line]


def test_without_the_key_set_stats_and_metrics_stay_open(start_server: StartServer) -> None:
    server = start_server()
    for path in ADMIN_PATHS:
        assert _get(server, path).status_code == 200, path


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_a_request_without_the_key_gets_401_with_a_json_error(
    keyed: ServerProcess, path: str
) -> None:
    response = _get(keyed, path)
    assert response.status_code == 401
    assert response.json() == REFUSAL
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Admin-Key": GUESS},
        {"Authorization": f"Bearer {GUESS}"},
        {"X-Admin-Key": KEY[:-1]},  # a prefix is not the key
        {"Authorization": KEY},  # the key without its scheme
        {"Authorization": f"Basic {KEY}"},
    ],
)
def test_a_wrong_key_is_refused(keyed: ServerProcess, headers: dict[str, str]) -> None:
    for path in ADMIN_PATHS:
        response = _get(keyed, path, headers)
        assert response.status_code == 401, (path, headers)
        assert response.json() == REFUSAL


@pytest.mark.parametrize(
    "headers",
    [{"X-Admin-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}],
)
def test_the_key_in_either_header_opens_stats_and_metrics(
    keyed: ServerProcess, headers: dict[str, str]
) -> None:
    assert "connections" in _get(keyed, "/stats", headers).json()
    metrics = _get(keyed, "/metrics", headers)
    assert metrics.status_code == 200 and "fanout_connections" in metrics.text


def test_healthz_needs_no_key(keyed: ServerProcess) -> None:
    response = _get(keyed, "/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_each_refusal_is_counted_and_logged_once_and_no_key_reaches_the_log(
    keyed: ServerProcess,
) -> None:
    def refused_401s() -> int:
        errors = _get(keyed, "/stats", {"X-Admin-Key": KEY}).json()["http_errors"]
        return int(errors.get("401", 0))

    before_count, before_lines = refused_401s(), len(_refusals_logged(keyed))
    assert _get(keyed, "/stats").status_code == 401
    assert _get(keyed, "/metrics", {"Authorization": f"Bearer {GUESS}"}).status_code == 401
    assert refused_401s() == before_count + 2
    assert wait_for(lambda: len(_refusals_logged(keyed)) == before_lines + 2)
    new = _refusals_logged(keyed)[before_lines:]
    assert "refused /stats from 127.0.0.1:" in new[0] and new[0].endswith("admin key missing")
    assert "refused /metrics from 127.0.0.1:" in new[1] and new[1].endswith("admin key wrong")
    log = keyed.log()
    assert KEY not in log and GUESS not in log


def test_the_key_is_never_shown_by_the_settings_or_their_errors() -> None:
    assert KEY not in repr(Settings(admin_key=KEY))
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"FANOUT_ADMIN_KEY": "two words"})
    assert str(refused.value).startswith("FANOUT_ADMIN_KEY='<hidden>': ")
    assert "two" not in str(refused.value) and "words" not in str(refused.value)


def test_the_demo_page_shows_n_a_and_stops_asking_when_stats_need_the_key(
    keyed: ServerProcess,
) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.set_default_timeout(10_000)
            errors: list[str] = []
            stats_requests: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "request",
                lambda req: stats_requests.append(req.url) if "/stats" in req.url else None,
            )
            page.goto(keyed.base + "/")
            expect(page.locator("#stats-state")).to_have_attribute("data-state", "locked")
            expect(page.locator("#stats-state")).to_contain_text("admin key")
            expect(page.locator("#stat-connections")).to_have_text("n/a")
            expect(page.locator("#stat-delivered")).to_have_text("n/a")
            # The page still works: connect and get a broadcast back.
            page.click("#connect-btn")
            expect(page.locator("#status")).to_have_attribute("data-state", "open")
            page.fill("#message-input", "hello with stats locked")
            page.press("#message-input", "Enter")
            expect(page.locator('#log li[data-kind="received"]')).to_have_count(1)
            page.wait_for_timeout(2500)  # two more poll intervals: it must not ask again
            assert len(stats_requests) == 1, stats_requests
            assert errors == []
        finally:
            context.close()
