"""CHAT_REGISTRATION: open to all, by invite, or closed; the same answers from the API and the
register form; the first account of an empty database gets in whatever the mode, as admin."""

import html
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from chat.errors import RegistrationRefused
from chat.fields import COMMON_PASSWORD_RULE, PASSWORD_RULE, USERNAME_PASSWORD_RULE, USERNAME_RULE
from tests.conftest import PASSWORD, Server, make_settings, unique

CLOSED_PAGE = 'id="registration-closed"'
FORM = 'id="register-form"'
FIRST_ACCOUNT_NOTE = 'id="first-account"'


def register(srv: Server, invite: str | None = None) -> httpx.Response:
    body = {"username": unique("mode"), "password": PASSWORD}
    if invite is not None:
        body["invite"] = invite
    return httpx.post(f"{srv.url}/api/auth/register", json=body, timeout=60)


def invite_code(srv: Server) -> str:
    assert srv.admin is not None
    r = httpx.post(f"{srv.url}/api/admin/invites", json={}, headers=srv.admin.headers)
    assert r.status_code == 201, r.text
    code: str = r.json()["code"]
    return code


class Browser:
    """A form-posting client, with the CSRF token of the last register page it loaded."""

    def __init__(self, srv: Server) -> None:
        self.http = srv.client(follow_redirects=False)

    def page(self, path: str = "/register") -> httpx.Response:
        return self.http.get(path)

    def submit(self, invite: str | None = None, username: str | None = None) -> httpx.Response:
        self.page()
        form = {
            "username": username or unique("form"),
            "password": PASSWORD,
            "csrf_token": self.http.cookies["csrf_token"],
        }
        if invite is not None:
            form["invite"] = invite
        return self.http.post("/register", data=form)


def signed_in(r: httpx.Response) -> bool:
    return (
        r.status_code == 303
        and r.headers["location"] == "/rooms"
        and "access_token" in str(r.headers.get_list("set-cookie"))
    )


# --- open ------------------------------------------------------------------------------------


def test_open_registration_needs_no_invite(server: Server) -> None:
    """The default: anybody registers, an invite (even a bogus one) is ignored, and the form
    has no invite field."""
    assert server.settings.registration == "open"
    assert register(server).status_code == 201
    assert register(server, "no-such-invite").status_code == 201
    browser = Browser(server)
    page = browser.page()
    assert page.status_code == 200
    assert FORM in page.text and 'name="invite"' not in page.text
    assert signed_in(browser.submit())
    assert 'href="/register"' in browser.page("/login").text


def test_register_page_states_every_password_rule(server: Server) -> None:
    """Before anything is sent: the username and password rules, and what else a password
    must not be."""
    page = html.unescape(Browser(server).page().text)
    for rule in (USERNAME_RULE, PASSWORD_RULE, USERNAME_PASSWORD_RULE, COMMON_PASSWORD_RULE):
        assert rule in page


# --- invite ----------------------------------------------------------------------------------


def test_invite_mode_over_the_api(make_server: Callable[..., Server]) -> None:
    """No invite, or an unusable one: 403 saying why; a valid invite: 201, no admin."""
    srv = make_server(registration="invite")
    refused = register(srv)
    assert refused.status_code == 403
    assert refused.json()["detail"] == str(RegistrationRefused(False, False))
    refused = register(srv, "not-an-invite")
    assert refused.status_code == 403
    assert refused.json()["detail"] == str(RegistrationRefused(True, False))
    created = register(srv, invite_code(srv))
    assert created.status_code == 201, created.text
    assert created.json()["is_admin"] is False


def test_invite_mode_over_the_form(make_server: Callable[..., Server]) -> None:
    """The form asks for the invite (required), `?invite=` fills it in, and only a valid one
    signs the new account in."""
    srv = make_server(registration="invite")
    browser = Browser(srv)
    page = browser.page()
    assert page.status_code == 200
    assert 'name="invite"' in page.text and "required" in page.text.split('name="invite"')[1]
    assert FIRST_ACCOUNT_NOTE not in page.text
    refused = browser.submit()
    assert refused.status_code == 403
    assert str(RegistrationRefused(False, False)) in html.unescape(refused.text).lower()
    refused = browser.submit("not-an-invite")
    assert refused.status_code == 403
    assert 'value="not-an-invite"' in refused.text

    code = invite_code(srv)
    prefilled = browser.page(f"/register?invite={code}")
    assert f'value="{code}"' in prefilled.text
    assert signed_in(browser.submit(code))


def test_refused_registrations_still_count_against_the_address(
    make_server: Callable[..., Server],
) -> None:
    """Per-address limits hold in invite mode, refusals included: codes cannot be tried fast."""
    srv = make_server(registration="invite", register_burst=3, register_per_hour=1)
    # The admin's registration took one of the three.
    assert register(srv, "guess-1").status_code == 403
    assert register(srv, invite_code(srv)).status_code == 201
    limited = register(srv, invite_code(srv))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


# --- closed ----------------------------------------------------------------------------------


def test_closed_mode_over_the_api(make_server: Callable[..., Server]) -> None:
    """Closed: 403 without an invite; an admin's invite still lets one person in."""
    srv = make_server(registration="closed")
    refused = register(srv)
    assert refused.status_code == 403
    assert refused.json()["detail"] == str(RegistrationRefused(False, True))
    assert register(srv, "not-an-invite").status_code == 403
    created = register(srv, invite_code(srv))
    assert created.status_code == 201, created.text


def test_closed_mode_over_the_form(make_server: Callable[..., Server]) -> None:
    """Closed: the register page has no form, says so and points to sign-in; the sign-in page
    offers no registration; a form post is refused; an invite link still shows the form and
    works."""
    srv = make_server(registration="closed")
    browser = Browser(srv)
    page = browser.page()
    assert page.status_code == 403
    assert CLOSED_PAGE in page.text and FORM not in page.text
    assert 'href="/login"' in page.text
    assert 'href="/register"' not in browser.page("/login").text
    refused = browser.submit()
    assert refused.status_code == 403 and CLOSED_PAGE in refused.text

    code = invite_code(srv)
    invited = browser.page(f"/register?invite={code}")
    assert invited.status_code == 200
    assert FORM in invited.text and f'value="{code}"' in invited.text
    assert signed_in(browser.submit(code))


# --- the first account -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["invite", "closed"])
def test_first_account_gets_in_as_admin_whatever_the_mode(tmp_path: Path, mode: str) -> None:
    """On an empty database the form is there and says its account will be the admin; the
    first registration (no invite) is admin, and the next one without an invite is refused."""
    srv = Server(make_settings(tmp_path, registration=mode))
    srv.start()
    try:
        page = Browser(srv).page()
        assert page.status_code == 200
        assert FORM in page.text and FIRST_ACCOUNT_NOTE in page.text
        first = register(srv)
        assert first.status_code == 201, first.text
        assert first.json()["is_admin"] is True
        assert register(srv).status_code == 403
        assert FIRST_ACCOUNT_NOTE not in Browser(srv).page().text
    finally:
        srv.stop()


def test_first_account_through_the_form_when_closed(tmp_path: Path) -> None:
    """The form registers the first account of a closed server; after it, the page is closed."""
    srv = Server(make_settings(tmp_path, registration="closed"))
    srv.start()
    try:
        assert signed_in(Browser(srv).submit())
        assert Browser(srv).page().status_code == 403
    finally:
        srv.stop()
