"""Weak passwords are refused wherever a password is set: the most common ones, in any case,
and the username itself."""

import html
from pathlib import Path

import httpx
import pytest

from chat import fields
from tests.conftest import PASSWORD, Server, unique
from tests.test_cli import assert_one_line_error, run_chat

# The rules' words (chat/fields.py), spelled out so that these tests run against any version.
COMMON_PASSWORD_RULE = "Passwords must not be one of the most common passwords."
USERNAME_PASSWORD_RULE = "Passwords must not be the username."
WEAK = ["12345678", "password", "PASSWORD", "Password1", "qwerty123", "iloveyou", "11111111"]


def test_the_list_holds_the_usual_suspects_and_not_a_passphrase() -> None:
    assert fields.COMMON_PASSWORD_RULE == COMMON_PASSWORD_RULE
    assert fields.USERNAME_PASSWORD_RULE == USERNAME_PASSWORD_RULE
    assert all(fields.is_common_password(p) for p in WEAK)
    assert not fields.is_common_password(PASSWORD)


@pytest.mark.parametrize("password", WEAK)
def test_api_refuses_a_common_password(server: Server, password: str) -> None:
    body = {"username": unique("weak"), "password": password}
    r = httpx.post(f"{server.url}/api/auth/register", json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert COMMON_PASSWORD_RULE in r.text


def test_api_refuses_the_username_as_password(server: Server) -> None:
    name = unique("samename")
    body = {"username": name, "password": name.upper()}
    r = httpx.post(f"{server.url}/api/auth/register", json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert USERNAME_PASSWORD_RULE in r.text
    # Control: the same name with a strong password is welcome.
    r = httpx.post(f"{server.url}/api/auth/register", json={**body, "password": PASSWORD})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("password", "error"), [("12345678", COMMON_PASSWORD_RULE), (None, USERNAME_PASSWORD_RULE)]
)
def test_register_form_refuses_a_weak_password(
    server: Server, password: str | None, error: str
) -> None:
    http = server.client()
    csrf = http.get("/register").cookies["csrf_token"]
    name = unique("formweak")
    form = {"username": name, "password": password or name, "csrf_token": csrf}
    r = http.post("/register", data=form)
    assert r.status_code == 400
    assert error in html.unescape(r.text)
    assert "access_token" not in r.cookies


@pytest.mark.parametrize(
    ("password", "error"), [("password", COMMON_PASSWORD_RULE), ("boss-admin", None)]
)
def test_create_admin_refuses_a_weak_password(
    tmp_path: Path, password: str, error: str | None
) -> None:
    result = run_chat("create-admin", "boss-admin", data_dir=tmp_path, CHAT_ADMIN_PASSWORD=password)
    line = assert_one_line_error(result)
    expected = (error or USERNAME_PASSWORD_RULE).rstrip(".")
    assert line.lower() == f"chat: error: {expected}".lower()
