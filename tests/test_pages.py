"""The register page: the rules it shows before the form is sent, and the refusals after."""

import html
import re

import httpx
import pytest

from chat.fields import PASSWORD_RULE, USERNAME_PATTERN, USERNAME_RULE
from tests.conftest import Server, unique


def register_page(server: Server) -> tuple[httpx.Client, str, str]:
    """A browser-like client that has loaded `/register`; the page, and its CSRF token."""
    client = server.client(follow_redirects=False)
    r = client.get("/register")
    assert r.status_code == 200, r.text
    token = client.cookies.get("csrf_token")
    assert token
    return client, html.unescape(r.text), token


def test_register_page_shows_the_rules(server: Server) -> None:
    """Both rules are on the page before anything is sent, and the browser checks the
    username with the server's own pattern."""
    _client, page, _csrf = register_page(server)
    assert f'<small id="username-rule">{USERNAME_RULE}</small>' in page
    assert f'<small id="password-rule">{PASSWORD_RULE}</small>' in page
    pattern = re.search(r'id="username"[^>]*pattern="([^"]*)"', page)
    assert pattern is not None
    assert pattern.group(1) == USERNAME_PATTERN


@pytest.mark.parametrize(
    ("username", "password", "error"),
    [
        ("ab", "long enough", f"Usernames are {USERNAME_RULE}."),
        ("no spaces", "long enough", f"Usernames are {USERNAME_RULE}."),
        ("a" * 33, "long enough", f"Usernames are {USERNAME_RULE}."),
        (None, "short", f"Passwords are {PASSWORD_RULE}."),
        (None, "x" * 1025, f"Passwords are {PASSWORD_RULE}."),
    ],
)
def test_register_form_refuses_with_the_rule(
    server: Server, username: str | None, password: str, error: str
) -> None:
    """A refused form says the rule in the words the page showed, and keeps the rules shown."""
    client, _page, csrf = register_page(server)
    form = {"username": username or unique(), "password": password, "csrf_token": csrf}
    r = client.post("/register", data=form)
    assert r.status_code == 400
    page = html.unescape(r.text)
    assert f'<p class="error" role="alert" id="form-error">{error}</p>' in page
    assert f'<small id="username-rule">{USERNAME_RULE}</small>' in page
    assert "access_token" not in r.cookies
