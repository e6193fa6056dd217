"""CSRF protection, session cookies, redirects, CSP, and password hashing off the event loop."""

import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from chat import security
from tests.conftest import Account, Server, unique
from tests.test_rooms_api import room_names

CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@pytest.fixture(scope="module")
def user(server: Server) -> Account:
    """One fresh account for this module (each registration costs two Argon2 runs)."""
    return server.register()


def browser(server: Server) -> tuple[httpx.Client, str]:
    """A browser-like client that has loaded `/login`, and its CSRF token."""
    client = server.client(follow_redirects=False)
    r = client.get("/login")
    assert r.status_code == 200, r.text
    token = client.cookies.get(CSRF_COOKIE)
    assert token, "GET /login sets no csrf_token cookie"
    return client, token


def sign_in(client: httpx.Client, csrf: str, account: Account) -> httpx.Response:
    form = {"username": account.username, "password": account.password, "csrf_token": csrf}
    return client.post("/login", data=form)


def set_cookie_headers(r: httpx.Response, name: str) -> list[str]:
    return [h for h in r.headers.get_list("set-cookie") if h.startswith(f"{name}=")]


# --- CSRF on the API with cookie authentication -----------------------------------------


def test_cookie_api_post_needs_csrf_header(server: Server, user: Account, room: str) -> None:
    """A cookie-authenticated API POST needs an X-CSRF-Token header equal to the csrf cookie."""
    csrf = "t" * 43
    client = server.client(cookies={"access_token": user.token, CSRF_COOKIE: csrf})
    path = f"/api/rooms/{room}/messages"
    assert client.get(path).status_code == 200
    assert client.post(path, json={"body": "no header"}).status_code == 403
    r = client.post(path, json={"body": "wrong"}, headers={CSRF_HEADER: "x" * 43})
    assert r.status_code == 403
    r = client.post(path, json={"body": "ok"}, headers={CSRF_HEADER: csrf})
    assert r.status_code == 201, r.text
    assert [m["body"] for m in client.get(path).json()["messages"]] == ["ok"]


def test_cookie_api_post_without_csrf_cookie(server: Server, user: Account, room: str) -> None:
    """A CSRF header alone, without the csrf cookie to match, is refused with 403."""
    client = server.client(cookies={"access_token": user.token})
    r = client.post(f"/api/rooms/{room}/messages", json={"body": "x"}, headers={CSRF_HEADER: "a"})
    assert r.status_code == 403
    assert client.post("/api/rooms", json={"name": unique("csrf-")}).status_code == 403


def test_bearer_api_post_needs_no_csrf(server: Server, user: Account, room: str) -> None:
    """A bearer-token API POST, which a foreign site cannot forge, needs no CSRF header."""
    r = server.client(headers=user.headers).post(
        f"/api/rooms/{room}/messages", json={"body": "bearer"}
    )
    assert r.status_code == 201


# --- CSRF on browser forms --------------------------------------------------------------


def test_login_form_refuses_wrong_csrf(server: Server, user: Account) -> None:
    """`/login` with a csrf_token field that does not match the cookie answers 403, no session."""
    client, _csrf = browser(server)
    form = {"username": user.username, "password": user.password, "csrf_token": "forged"}
    r = client.post("/login", data=form)
    assert r.status_code == 403
    assert not set_cookie_headers(r, "access_token")


def test_login_form_refuses_csrf_without_cookie(server: Server, user: Account) -> None:
    """`/login` with a csrf_token field but no csrf cookie answers 403, no session."""
    _client, csrf = browser(server)
    stranger = server.client(follow_redirects=False)
    form = {"username": user.username, "password": user.password, "csrf_token": csrf}
    r = stranger.post("/login", data=form)
    assert r.status_code == 403
    assert not set_cookie_headers(r, "access_token")


def test_login_form_refuses_missing_csrf_field(server: Server, user: Account) -> None:
    """`/login` without any csrf_token field is refused and starts no session."""
    client, _csrf = browser(server)
    r = client.post("/login", data={"username": user.username, "password": user.password})
    # 422 (the field is required) or 403 both refuse; what matters is no session.
    assert r.status_code in (403, 422)
    assert not set_cookie_headers(r, "access_token")


def test_register_form_refuses_wrong_csrf(server: Server) -> None:
    """`/register` with a forged csrf_token answers 403 and creates no account."""
    client, _csrf = browser(server)
    name = unique()
    r = client.post(
        "/register", data={"username": name, "password": "long enough", "csrf_token": "forged"}
    )
    assert r.status_code == 403
    assert not set_cookie_headers(r, "access_token")
    token = client.post("/api/auth/token", data={"username": name, "password": "long enough"})
    assert token.status_code == 401


def test_register_form_with_csrf_signs_in(server: Server) -> None:
    """`/register` with the right csrf_token creates the account, signs in, and goes to /rooms."""
    client, csrf = browser(server)
    name = unique()
    r = client.post(
        "/register", data={"username": name, "password": "long enough", "csrf_token": csrf}
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/rooms"
    assert set_cookie_headers(r, "access_token")
    assert client.get("/api/rooms").status_code == 200


def test_logout_form_refuses_wrong_csrf(server: Server, user: Account) -> None:
    """`/logout` with a forged csrf_token answers 403 and leaves the session alone."""
    client, csrf = browser(server)
    assert sign_in(client, csrf, user).status_code == 303
    r = client.post("/logout", data={"csrf_token": "forged"})
    assert r.status_code == 403
    assert not set_cookie_headers(r, "access_token")
    assert client.get("/api/rooms").status_code == 200


def test_logout_form_with_csrf_ends_session(server: Server, user: Account) -> None:
    """`/logout` with the right csrf_token clears the cookie and redirects to /login."""
    client, csrf = browser(server)
    assert sign_in(client, csrf, user).status_code == 303
    csrf = client.cookies["csrf_token"]  # Renewed at sign-in.
    r = client.post("/logout", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    assert set_cookie_headers(r, "access_token")
    assert client.get("/api/rooms").status_code == 401


def test_rooms_form_refuses_wrong_csrf(server: Server, user: Account) -> None:
    """`/rooms` (create room) with a forged csrf_token answers 403 and creates no room."""
    client, csrf = browser(server)
    assert sign_in(client, csrf, user).status_code == 303
    name = unique("form-")
    r = client.post("/rooms", data={"name": name, "csrf_token": "forged"})
    assert r.status_code == 403
    assert name not in room_names(client)


def test_rooms_form_with_csrf_creates_room(server: Server, user: Account) -> None:
    """`/rooms` with the right csrf_token creates the room and redirects to it."""
    client, csrf = browser(server)
    assert sign_in(client, csrf, user).status_code == 303
    csrf = client.cookies["csrf_token"]  # Renewed at sign-in.
    name = unique("form-")
    r = client.post("/rooms", data={"name": name, "csrf_token": csrf})
    assert r.status_code == 303
    assert r.headers["location"] == f"/rooms/{name}"
    assert name in room_names(client)


# --- session cookie and redirects -------------------------------------------------------


def test_login_sets_httponly_lax_cookie_and_redirects(server: Server, user: Account) -> None:
    """A successful `/login` sets an HttpOnly, SameSite=Lax JWT cookie and 303s to /rooms."""
    client, csrf = browser(server)
    r = sign_in(client, csrf, user)
    assert r.status_code == 303
    assert r.headers["location"] == "/rooms"
    (cookie,) = set_cookie_headers(r, "access_token")
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    token = cookie.split(";")[0].split("=", 1)[1]
    claims = security.decode_access_token(token, server.settings.signing_key())
    assert claims.user_id == user.id


def test_login_with_wrong_password_sets_no_cookie(server: Server, user: Account) -> None:
    """`/login` with a wrong password answers 401 and sets no session cookie."""
    client, csrf = browser(server)
    form = {"username": user.username, "password": "wrong password", "csrf_token": csrf}
    r = client.post("/login", data=form)
    assert r.status_code == 401
    assert not set_cookie_headers(r, "access_token")


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "//evil.example/rooms",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "evil.example",
        "javascript:alert(1)",
    ],
)
def test_login_never_redirects_off_site(server: Server, user: Account, target: str) -> None:
    """`/login` with a `next` that leaves the site redirects to /rooms instead."""
    client, csrf = browser(server)
    form = {
        "username": user.username,
        "password": user.password,
        "csrf_token": csrf,
        "next": target,
    }
    r = client.post("/login", data=form)
    assert r.status_code == 303
    assert r.headers["location"] == "/rooms"


def test_login_follows_a_local_next(server: Server, user: Account) -> None:
    """`/login` with a local `next` path redirects there."""
    client, csrf = browser(server)
    form = {
        "username": user.username,
        "password": user.password,
        "csrf_token": csrf,
        "next": "/rooms/general",
    }
    r = client.post("/login", data=form)
    assert r.status_code == 303
    assert r.headers["location"] == "/rooms/general"


# --- Content-Security-Policy ------------------------------------------------------------


def _directives(csp: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in csp.split(";"):
        words = directive.split()
        if words:
            parsed[words[0].lower()] = words[1:]
    return parsed


@pytest.mark.parametrize("path", ["/healthz", "/api/rooms", "/", "/login"])
def test_responses_carry_strict_csp(server: Server, path: str) -> None:
    """Responses carry a Content-Security-Policy whose scripts exclude 'unsafe-inline'."""
    r = server.client(follow_redirects=False).get(path)
    assert r.status_code < 500
    csp = r.headers.get("content-security-policy")
    assert csp, f"no CSP on {path}"
    directives = _directives(csp)
    scripts = directives.get("script-src", directives.get("default-src"))
    assert scripts is not None
    assert "'unsafe-inline'" not in scripts
    assert "'unsafe-eval'" not in scripts
    assert "*" not in scripts
    assert r.headers.get("x-content-type-options") == "nosniff"


# --- password hashing off the event loop ------------------------------------------------

LOGINS = 20
# The bar is 50 ms on a quiet machine; the test allows for a busy CI box, and
# the control below shows hashing on the loop lands far above it.
MAX_LOOP_LAG_MS = 150.0


def loop_lag_during_logins(server: Server, account: Account) -> float:
    """The server's worst event-loop lag (ms) while LOGINS logins run concurrently."""
    services = server.server.config.app.state.services  # type: ignore[union-attr]
    errors: list[BaseException] = []

    def log_in() -> None:
        try:
            form = {"username": account.username, "password": account.password}
            r = httpx.post(f"{server.url}/api/auth/token", data=form, timeout=60)
            assert r.status_code == 200, r.text
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=log_in) for _ in range(LOGINS)]
    services.loop_lag.take_max_ms()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    return services.loop_lag.take_max_ms()


def hashing_threads(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """The threads that run password checks from now on (filled as they run)."""
    seen: set[int] = set()
    context = security._passwords
    check = context.verify_and_update

    def recorded(password: str, password_hash: str) -> tuple[bool, str | None]:
        seen.add(threading.get_ident())
        return check(password, password_hash)

    monkeypatch.setattr(context, "verify_and_update", recorded)
    return seen


# Alone: another test's work on the same 2 CPUs would show in the loop's lag.
@pytest.mark.exclusive
def test_password_hashing_does_not_block_event_loop(
    product_hashing_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While 20 logins hash at once, no password check runs on the event loop's thread, and
    the loop never waits long."""
    server = product_hashing_server
    assert server.thread is not None
    account = server.register()
    threads = hashing_threads(monkeypatch)
    lag = loop_lag_during_logins(server, account)
    assert threads, "no password was checked"
    assert server.thread.ident not in threads, "a password was checked on the event loop"
    assert lag < MAX_LOOP_LAG_MS, f"event loop stalled for {lag:.0f} ms"


def test_hashing_on_the_loop_is_caught(
    product_hashing_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control of the test above: password checks run on the loop are seen there, and a
    check that holds the loop past the bar shows in the lag."""
    server = product_hashing_server
    assert server.thread is not None
    account = server.register()
    threads = hashing_threads(monkeypatch)
    check = security._passwords.verify_and_update

    async def check_on_loop(password: str, password_hash: str) -> tuple[bool, str | None]:
        # As long as argon2's old default parameters took: past the bar.
        time.sleep(MAX_LOOP_LAG_MS * 1.5 / 1000)  # noqa: ASYNC251 (blocking is the point)
        return check(password, password_hash)

    patched: Callable[[str, str], Awaitable[Any]] = check_on_loop
    services = server.server.config.app.state.services  # type: ignore[union-attr]
    monkeypatch.setattr(services.hasher, "verify_and_update", patched)
    lag = loop_lag_during_logins(server, account)
    assert server.thread.ident in threads, "checks on the loop went unseen"
    assert lag >= MAX_LOOP_LAG_MS, f"blocking hashing went unnoticed: {lag:.0f} ms"


def test_a_token_checked_before_is_still_refused_once_it_expires() -> None:
    """A token's signature is checked once and its answer kept, but its time is checked at
    every use: good while it lasts (the control), refused after, still readable for a
    renewal; another key refuses it although the first key's answer is kept."""
    key = "k" * 32
    token = security.create_access_token(7, "tk", key, timedelta(seconds=1), "sid")
    assert security.decode_access_token(token, key).user_id == 7
    assert security.decode_access_token(token, key).session_id == "sid"
    time.sleep(2.1)
    with pytest.raises(security.InvalidToken):
        security.decode_access_token(token, key)
    assert security.decode_access_token(token, key, verify_exp=False).user_id == 7
    with pytest.raises(security.InvalidToken):
        security.decode_access_token(token, "x" * 32, verify_exp=False)
