"""Sessions in a real browser: a room page outlives its access tokens, and a password
changed in one browser signs the other out."""

import time
from collections.abc import Callable

import pytest

from tests.conftest import Server, unique
from tests.test_browser import Person, browser  # noqa: F401  (the Chromium fixture)
from tests.test_me import NEW_PASSWORD

pytest.importorskip("playwright", reason="the test extra is not installed")
from playwright.sync_api import Browser, expect

# Short access tokens: the room page must outlive several of them.
TTL_SECS = 2
LIFETIMES = 3


def test_a_room_page_outlives_several_access_tokens(
    make_server: Callable[..., Server],
    browser: Browser,  # noqa: F811
) -> None:
    """With 2 s access tokens, a signed-in room page stays live for three of their lifetimes
    with no visible interruption, keeps the typed draft, sends it, and its API calls keep
    working (the cookie is renewed)."""
    srv = make_server(token_ttl_secs=TTL_SECS)
    name = unique("stay")
    srv.register(name)
    person = Person(browser.new_context(), srv.url)
    try:
        person.sign_in(name)
        person.goto("/rooms/general")
        status = person.page.locator("#status")
        expect(status).to_have_text("live")
        draft = "a reply I am still typing"
        person.page.fill("#body", draft)
        deadline = time.monotonic() + TTL_SECS * LIFETIMES + 1
        while time.monotonic() < deadline:
            assert status.inner_text() == "live"
            assert person.page.url.endswith("/rooms/general")
            time.sleep(0.25)
        assert person.page.input_value("#body") == draft
        person.page.press("#body", "Enter")
        expect(person.page.locator("#messages li .body", has_text=draft)).to_have_count(1)
        answered = person.page.evaluate(
            "async () => (await fetch('/api/rooms', {credentials: 'same-origin'})).status"
        )
        assert answered == 200
        assert person.page.url.endswith("/rooms/general")
    finally:
        person.context.close()


def test_a_password_change_signs_the_other_browser_out(
    make_server: Callable[..., Server],
    browser: Browser,  # noqa: F811
) -> None:
    """Changing the password on the account page in one browser sends the same user's room
    page in another browser to the sign-in page within two seconds; the first browser stays
    signed in and its account page lists one session."""
    srv = make_server()
    name = unique("pw")
    srv.register(name)
    here, there = Person(browser.new_context(), srv.url), Person(browser.new_context(), srv.url)
    try:
        for person in (here, there):
            person.sign_in(name)
        there.goto("/rooms/general")
        expect(there.page.locator("#status")).to_have_text("live")
        here.page.click("#account-link")
        here.page.wait_for_url("**/account")
        # Two browsers, and the API session `register` signed in with.
        expect(here.page.locator("#sessions li")).to_have_count(3)
        here.page.fill("#current-password", "correct horse battery")
        here.page.fill("#new-password", NEW_PASSWORD)
        here.page.click("#password-form button[type=submit]")
        started = time.monotonic()
        there.page.wait_for_url("**/login?next=**", timeout=5000)
        assert time.monotonic() - started < 2.0
        here.page.wait_for_url("**/account?changed=1")
        expect(here.page.locator("#notice")).to_be_visible()
        expect(here.page.locator("#sessions li")).to_have_count(1)
        here.goto("/rooms/general")
        expect(here.page.locator("#status")).to_have_text("live")
    finally:
        here.context.close()
        there.context.close()
