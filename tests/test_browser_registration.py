"""Registration by invite and closed registration, in Chromium."""

from collections.abc import Callable

import httpx
import pytest

from chat.fields import PASSWORD_RULE, USERNAME_RULE
from tests.conftest import PASSWORD, Server, unique

pytest.importorskip("playwright", reason="the test extra is not installed")
from playwright.sync_api import Browser, expect

from tests.test_browser import Person, browser  # noqa: F401  (the fixture)


def test_invite_link_registers_and_signs_in(
    make_server: Callable[..., Server],
    browser: Browser,  # noqa: F811  (the imported fixture)
) -> None:
    """An invite's link opens the form with the code filled in and the rules shown; sending
    it signs the new account in. Without the code, the browser will not send the form."""
    srv = make_server(registration="invite")
    assert srv.admin is not None
    r = httpx.post(f"{srv.url}/api/admin/invites", json={}, headers=srv.admin.headers)
    assert r.status_code == 201, r.text
    invite = r.json()
    person = Person(browser.new_context(), srv.url)
    try:
        page = person.page
        page.goto(invite["url"])
        expect(page.locator("#invite")).to_have_value(invite["code"])
        expect(page.locator("#username-rule")).to_have_text(USERNAME_RULE)
        expect(page.locator("#password-rule")).to_have_text(PASSWORD_RULE)
        name = unique("invited")
        page.fill("#username", name)
        page.fill("#password", PASSWORD)
        page.fill("#invite", "")
        page.click("#register-form button[type=submit]")
        # The required field stops the form in the page: still here, nothing sent.
        assert page.evaluate("document.querySelector('#invite').validity.valueMissing")
        assert "/register" in page.url
        page.fill("#invite", invite["code"])
        page.click("#register-form button[type=submit]")
        page.wait_for_url("**/rooms")
        expect(page.locator("#me")).to_have_text(name)
        assert person.console_errors == []
    finally:
        person.context.close()


def test_closed_registration_page(
    make_server: Callable[..., Server],
    browser: Browser,  # noqa: F811  (the imported fixture)
) -> None:
    """Closed: the page says so, has no form, and its link leads to sign-in."""
    srv = make_server(registration="closed")
    person = Person(browser.new_context(), srv.url)
    try:
        person.goto("/register")
        expect(person.page.locator("h1")).to_have_text("Registration is closed")
        expect(person.page.locator("form#register-form")).to_have_count(0)
        person.page.click("text=Sign in")
        person.page.wait_for_url("**/login")
        expect(person.page.locator("#login-form")).to_be_visible()
    finally:
        person.context.close()
