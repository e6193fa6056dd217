"""The caller's own account: /api/me, changing the password, listing and ending sessions."""

from datetime import datetime

import httpx
from jose import jwt

from tests.conftest import PASSWORD, Server, of_type, recv_until
from tests.test_sessions import api_sign_in, bearer, browser_sign_in, status_of
from tests.ws_helpers import closed_with, welcome

NEW_PASSWORD = "a brand new passphrase"


def test_me_names_the_caller(server: Server) -> None:
    """GET /api/me → {id, username, is_admin, created_at}; 401 without a token."""
    account = server.register()
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.get("/api/me", headers=account.headers)
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"id", "username", "is_admin", "created_at"}
        assert (body["id"], body["username"], body["is_admin"]) == (
            account.id,
            account.username,
            False,
        )
        datetime.fromisoformat(body["created_at"])
        assert http.get("/api/me").status_code == 401


def change_password(
    server: Server, token: str, current: str, new: str = NEW_PASSWORD
) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        return http.post(
            "/api/me/password",
            json={"current_password": current, "new_password": new},
            headers=bearer(token),
        )


def sign_in_status(server: Server, username: str, password: str) -> int:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.post("/api/auth/token", data={"username": username, "password": password})
        return r.status_code


def test_password_change_ends_every_other_session(server: Server, room: str) -> None:
    """A new password: 204, the other sessions' sockets close 1008 and their tokens get
    401, the calling session goes on; the old password no longer signs in."""
    account = server.register()
    other = api_sign_in(server, account)
    with (
        server.ws(f"/ws/rooms/{room}", token=other["access_token"]) as theirs,
        server.ws(f"/ws/rooms/{room}", account) as mine,
    ):
        welcome(theirs)
        welcome(mine)
        assert change_password(server, account.token, PASSWORD).status_code == 204
        assert closed_with(theirs).code == 1008
        mine.send('{"type":"message","body":"still signed in"}')
        assert recv_until(mine, of_type("message"))["body"] == "still signed in"
    assert status_of(server, bearer(other["access_token"])) == 401
    assert status_of(server, account.headers) == 200
    assert sign_in_status(server, account.username, PASSWORD) == 401
    assert sign_in_status(server, account.username, NEW_PASSWORD) == 200


def test_password_change_refusals(server: Server) -> None:
    """A wrong current password, or a new one breaking the password rules, gets 400 and
    changes nothing; the other session stays (control: it still works after)."""
    account = server.register()
    other = api_sign_in(server, account)
    refused = [
        (PASSWORD + "x", NEW_PASSWORD),
        (PASSWORD, "short"),
        (PASSWORD, account.username),
        (PASSWORD, "password123"),
    ]
    for current, new in refused:
        r = change_password(server, account.token, current, new)
        assert r.status_code == 400, (current, new, r.text)
    assert status_of(server, bearer(other["access_token"])) == 200
    assert sign_in_status(server, account.username, PASSWORD) == 200
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.post(
            "/api/me/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        )
        assert r.status_code == 401


def test_cookie_password_change_needs_the_csrf_header(server: Server) -> None:
    """Signed in by the cookie, the password change without the CSRF header gets 403."""
    account = server.register()
    http = browser_sign_in(server, account.username)
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert http.post("/api/me/password", json=body).status_code == 403
    r = http.post(
        "/api/me/password", json=body, headers={"X-CSRF-Token": http.cookies["csrf_token"]}
    )
    assert r.status_code == 204


def sessions_of(server: Server, token: str) -> list[dict[str, object]]:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.get("/api/me/sessions", headers=bearer(token))
    assert r.status_code == 200, r.text
    listed: list[dict[str, object]] = r.json()
    return listed


def test_sessions_are_listed_and_can_be_ended(server: Server, room: str) -> None:
    """GET /api/me/sessions lists the caller's live sessions with their device and the
    current one marked; DELETE ends one (its socket 1008, its token 401); another user's
    session or an unknown id is 404."""
    account = server.register()
    browser = browser_sign_in(server, account.username)
    stranger = server.register()
    listed = sessions_of(server, account.token)
    assert {s["id"] for s in listed} == {
        account.sid,
        _sid_of_cookie(browser.cookies["access_token"]),
    }
    assert set(listed[0]) == {"id", "created_at", "last_used_at", "user_agent", "current"}
    mine = next(s for s in listed if s["current"])
    theirs = next(s for s in listed if not s["current"])
    assert mine["id"] == account.sid
    assert theirs["user_agent"] == "Firefox/128 test"
    with (
        httpx.Client(base_url=server.url, timeout=15, headers=account.headers) as http,
        server.ws(
            f"/ws/rooms/{room}",
            headers={"Cookie": f"access_token={browser.cookies['access_token']}"},
        ) as ws,
    ):
        welcome(ws)
        assert http.delete(f"/api/me/sessions/{stranger.sid}").status_code == 404
        assert http.delete("/api/me/sessions/nope").status_code == 404
        assert status_of(server, stranger.headers) == 200
        assert http.delete(f"/api/me/sessions/{theirs['id']}").status_code == 204
        assert closed_with(ws).code == 1008
        assert browser.get("/api/rooms").status_code == 401
        assert [s["id"] for s in sessions_of(server, account.token)] == [account.sid]
        assert http.delete(f"/api/me/sessions/{theirs['id']}").status_code == 404


def _sid_of_cookie(token: str) -> str:
    sid: str = jwt.get_unverified_claims(token)["sid"]
    return sid


def test_account_page_lists_sessions_and_ends_them(server: Server) -> None:
    """/account shows each session's device as text and marks this one; its forms need the
    CSRF token, end one session, or every other; a wrong current password is refused."""
    account = server.register()
    with httpx.Client(base_url=server.url, timeout=15) as http:
        assert http.get("/account").status_code == 303
    browser = browser_sign_in(server, account.username)
    hostile = server.client(headers={"User-Agent": "<b>bold</b> agent"})
    csrf = hostile.get("/login").cookies["csrf_token"]
    hostile.post(
        "/login",
        data={"username": account.username, "password": PASSWORD, "csrf_token": csrf},
    )
    page = browser.get("/account")
    assert page.status_code == 200
    assert "&lt;b&gt;bold&lt;/b&gt; agent" in page.text and "<b>bold" not in page.text
    assert page.text.count("(this session)") == 1
    assert page.text.count('class="session"') == 3

    token = {"csrf_token": browser.cookies["csrf_token"]}
    hostile_sid = _sid_of_cookie(hostile.cookies["access_token"])
    refused = browser.post("/account/sessions/end", data={"session_id": hostile_sid})
    assert refused.status_code == 403
    assert hostile.get("/api/rooms").status_code == 200
    r = browser.post("/account/sessions/end", data={**token, "session_id": hostile_sid})
    assert r.status_code == 303
    assert hostile.get("/api/rooms").status_code == 401
    assert status_of(server, account.headers) == 200
    assert browser.post("/account/sessions/end", data=token).status_code == 303
    assert status_of(server, account.headers) == 401
    assert browser.get("/api/rooms").status_code == 200

    wrong = {**token, "current_password": "not it at all", "new_password": NEW_PASSWORD}
    r = browser.post("/account/password", data=wrong)
    assert r.status_code == 400 and "current password is wrong" in r.text
    right = {**token, "current_password": PASSWORD, "new_password": NEW_PASSWORD}
    r = browser.post("/account/password", data=right)
    assert r.status_code == 303 and r.headers["location"] == "/account?changed=1"
    assert sign_in_status(server, account.username, NEW_PASSWORD) == 200
