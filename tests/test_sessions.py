"""Sessions: every token names one; a browser's lasts while used and is renewed by the
server; ending one refuses its tokens and closes its sockets (1008)."""

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from chat.security import decode_access_token
from tests.conftest import (
    PASSWORD,
    Account,
    Server,
    _run_async,
    of_type,
    recv_until,
    run_sql,
    unique,
)
from tests.ws_helpers import closed_with, signed, welcome

# Short enough to outlive a few times within a test.
TTL_SECS = 2


def query(server: Server, sql: str) -> list[tuple[Any, ...]]:
    """Rows from the server's database, read behind its back."""
    url = server.settings.database_url
    if not url:
        with sqlite3.connect(server.settings.data_dir / "chat.db") as conn:
            return list(conn.execute(sql))

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    result: list[tuple[Any, ...]] = _run_async(run())
    return result


def browser_sign_in(server: Server, username: str, password: str = PASSWORD) -> httpx.Client:
    """A client signed in through the page form, holding the session's cookies."""
    http = server.client(headers={"User-Agent": "Firefox/128 test"})
    csrf = http.get("/login").cookies["csrf_token"]
    r = http.post("/login", data={"username": username, "password": password, "csrf_token": csrf})
    assert r.status_code == 303, r.text
    return http


def cookie_header(http: httpx.Client) -> dict[str, str]:
    return {"Cookie": f"access_token={http.cookies['access_token']}"}


def api_sign_in(server: Server, account: Account) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.post("/api/auth/token", data={"username": account.username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    pair: dict[str, Any] = r.json()
    return pair


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def status_of(server: Server, headers: dict[str, str], path: str = "/api/rooms") -> int:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        return http.get(path, headers=headers).status_code


def test_every_token_names_a_session(server: Server) -> None:
    """Tokens carry `sid`; a correctly signed token without one, or naming a session that
    does not exist or is another account's, gets 401 (control: its own session, 200)."""
    account, other = server.register(), server.register()
    key, now = server.settings.signing_key(), int(time.time())
    claims = {"sub": str(account.id), "iat": now, "exp": now + 300, "tkey": account.token_key}
    assert decode_access_token(account.token, key).session_id == account.sid
    assert status_of(server, bearer(signed(key, **claims, sid=account.sid))) == 200
    for sid in (None, "made-up", other.sid):
        token = signed(key, **claims) if sid is None else signed(key, **claims, sid=sid)
        assert status_of(server, bearer(token)) == 401, sid


def test_signing_out_ends_the_session_everywhere(server: Server, room: str) -> None:
    """API sign-out ends the session: its socket closes 1008, its tokens get 401; the same
    user's other session keeps working (control)."""
    account = server.register()
    other = api_sign_in(server, account)
    with (
        server.ws(f"/ws/rooms/{room}", account) as ending,
        server.ws(f"/ws/rooms/{room}", token=other["access_token"]) as staying,
    ):
        welcome(ending)
        welcome(staying)
        with httpx.Client(base_url=server.url, timeout=15) as http:
            assert http.post("/api/auth/logout", headers=account.headers).status_code == 204
        assert closed_with(ending).code == 1008
        staying.send('{"type":"message","body":"still here"}')
        assert recv_until(staying, of_type("message"))["body"] == "still here"
    assert status_of(server, account.headers) == 401
    assert status_of(server, bearer(other["access_token"])) == 200
    (ended_at,) = query(server, f"SELECT ended_at FROM sessions WHERE id = '{account.sid}'")[0]
    assert ended_at is not None


def test_a_browser_session_outlives_its_access_tokens(
    make_server: Callable[..., Server],
) -> None:
    """With access tokens of 2 s, a page-signed-in browser keeps its room socket open past
    several of them and can still send; an API token's socket closes 1008 at its expiry
    (control); the page and REST calls with the expired cookie are renewed, not refused."""
    srv = make_server(token_ttl_secs=TTL_SECS)
    name = unique()
    api = srv.register(name)
    http = browser_sign_in(srv, name)
    first_cookie = http.cookies["access_token"]
    with (
        srv.ws("/ws/rooms/general", headers=cookie_header(http)) as browser,
        srv.ws("/ws/rooms/general", api) as api_socket,
    ):
        welcome(browser)
        welcome(api_socket)
        assert closed_with(api_socket, timeout=TTL_SECS + 5).code == 1008
        time.sleep(TTL_SECS * 1.5)
        browser.send('{"type":"message","body":"after three lifetimes","nonce":"n1"}')
        assert recv_until(browser, of_type("message", nonce="n1"))["body"]
    # The page and the API accept the expired cookie, and set a fresh one.
    r = http.get("/rooms")
    assert r.status_code == 200, (r.headers, http.cookies, query(srv, "SELECT * FROM sessions"))
    renewed = r.cookies["access_token"]
    assert renewed != first_cookie
    assert decode_access_token(renewed, srv.settings.signing_key()).session_id == (
        decode_access_token(first_cookie, srv.settings.signing_key(), verify_exp=False).session_id
    )
    time.sleep(TTL_SECS + 0.5)
    assert http.get("/api/rooms").status_code == 200
    # A socket reconnecting with an expired cookie of a live session gets in.
    time.sleep(TTL_SECS + 0.5)
    with srv.ws("/ws/rooms/general", headers=cookie_header(http)) as again:
        welcome(again)
    # A bearer token is never renewed.
    assert status_of(srv, api.headers) == 401


def test_page_sign_out_ends_the_browser_session(make_server: Callable[..., Server]) -> None:
    """After the sign-out form the cookie's session is over: its socket closes 1008, and the
    old cookie, kept by an attacker, is neither accepted nor renewed."""
    srv = make_server(token_ttl_secs=TTL_SECS)
    name = unique()
    srv.register(name)
    http = browser_sign_in(srv, name)
    stolen = cookie_header(http)
    assert status_of(srv, stolen) == 200
    with srv.ws("/ws/rooms/general", headers=stolen) as ws:
        welcome(ws)
        r = http.post("/logout", data={"csrf_token": http.cookies["csrf_token"]})
        assert r.status_code == 303
        assert closed_with(ws).code == 1008
    assert status_of(srv, stolen) == 401
    time.sleep(TTL_SECS + 0.5)
    with httpx.Client(base_url=srv.url, timeout=15, headers=stolen) as thief:
        r = thief.get("/rooms")
        assert r.status_code == 303 and "access_token" not in r.cookies
    with srv.ws("/ws/rooms/general", headers=stolen) as ws:
        assert closed_with(ws).code == 1008


def test_a_session_unused_for_session_days_expires(server: Server) -> None:
    """A session last used more than CHAT_SESSION_DAYS ago is refused; one used a day before
    that limit is accepted and its last use moves to now (sliding)."""
    account, stale = server.register(), server.register()
    days = server.settings.session_days
    for who, ago in ((account, days - 1), (stale, days + 1)):
        run_sql(
            server,
            f"UPDATE sessions SET last_used_at = '{_days_ago(ago)}' WHERE id = '{who.sid}'",
        )
    assert status_of(server, stale.headers) == 401
    assert status_of(server, account.headers) == 200
    (last_used,) = query(server, f"SELECT last_used_at FROM sessions WHERE id = '{account.sid}'")[0]
    assert str(last_used)[:10] == time.strftime("%Y-%m-%d", time.gmtime())


def _days_ago(days: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S.000000+00:00", time.gmtime(time.time() - days * 86400))


def test_a_new_token_key_ends_every_session(server: Server) -> None:
    """A session started under the account's previous token key is over (a deactivation
    rotates it): a token with the new key but that session's id gets 401 (control: with
    the key it started under, 200)."""
    account = server.register()
    key, now = server.settings.signing_key(), int(time.time())
    claims = {"sub": str(account.id), "iat": now, "exp": now + 300, "sid": account.sid}
    assert status_of(server, bearer(signed(key, **claims, tkey=account.token_key))) == 200
    run_sql(server, f"UPDATE users SET token_key = 'rotated' WHERE id = {account.id}")
    assert status_of(server, bearer(signed(key, **claims, tkey="rotated"))) == 401
