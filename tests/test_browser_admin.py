"""`/admin` in Chromium: the alert feed (the stored ones, then live ones as they come) and
charts that move while messages are posted; its screenshot for the README."""

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, unique
from tests.test_browser import Person, chromium

pytest.importorskip("axe_playwright_python", reason="the test extra is not installed")
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, expect

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "admin.png"


def heights(points: str | None) -> set[float]:
    """The heights above the axis of a chart line's points (its drawing box is 80 high)."""
    assert points
    return {round(80 - float(xy.split(",")[1]), 1) for xy in points.split()}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_admin_page_shows_alerts_live_and_charts_that_move(
    make_server: Callable[..., Server], browser: Browser
) -> None:
    srv = make_server(
        stats_period_secs=1, login_failures_burst=1, rate_burst=1000, rate_per_sec=1000
    )
    assert srv.admin is not None
    early = srv.register(unique("early"))
    admin = Person(browser.new_context(viewport={"width": 1100, "height": 1000}), srv.url)
    try:
        admin.sign_in(srv.admin.username)
        admin.goto("/admin")
        page = admin.page
        feed = page.locator("#alerts")
        # Stored before the page opened: loaded from the API.
        expect(
            feed.locator("li[data-kind=user_registered]", has_text=early.username)
        ).to_have_count(1)
        expect(page.locator("#status")).to_have_text("live")

        # Raised while the page is open: pushed, shown first, with its level.
        form = {"username": early.username, "password": "wrong password"}
        codes = [httpx.post(f"{srv.url}/api/auth/token", data=form).status_code for _ in range(3)]
        assert codes[-1] == 429
        throttled = feed.locator("li").first
        expect(throttled).to_have_attribute("data-kind", "login_throttled")
        expect(throttled).to_have_class("level-warning")
        expect(throttled.locator(".level")).to_have_text("warning")
        late = srv.register(unique("late"))
        expect(feed.locator("li").first).to_contain_text(late.username)
        # Text, never markup.
        assert feed.locator("img, script").count() == 0

        # The messages chart moves while messages are posted to a room with a reader.
        line = page.locator(".chart[data-series=messages_per_sec] polyline.total")
        expect(line).to_have_count(1)
        # One node: its line is the total, drawn once.
        expect(page.locator(".chart polyline.node")).to_have_count(0)
        value = page.locator(".chart[data-series=messages_per_sec] .value")
        room = srv.create_room(srv.admin)
        with (
            srv.ws(f"/ws/rooms/{room}", srv.admin) as reader,
            httpx.Client(base_url=srv.url, headers=srv.admin.headers) as http,
        ):
            reader.recv(timeout=5)
            # Flat at zero: no message yet.
            assert heights(line.get_attribute("points")) == {0.0}
            posted = 0
            while value.inner_text() in ("", "0") and posted < 200:
                r = http.post(f"/api/rooms/{room}/messages", json={"body": f"m{posted}"})
                assert r.status_code == 201, r.text
                posted += 1
            expect(value).not_to_have_text("0")
            assert max(heights(line.get_attribute("points"))) > 0
            deliveries = page.locator(".chart[data-series=deliveries_per_sec] .value")
            expect(deliveries).not_to_have_text("0")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        expect(page.locator("#nodes")).to_contain_text("1 node")
        results = Axe().run(page)
        assert results.violations_count == 0, results.generate_report()
        assert not [e for e in admin.console_errors if "Failed to load resource" not in e]
    finally:
        admin.context.close()
