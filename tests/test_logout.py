"""Signing out revokes the token: refused afterwards, and its live sockets closed."""

from collections.abc import Callable

from tests.conftest import PASSWORD, Server, of_type, recv_until, unique
from tests.ws_helpers import closed_with, welcome


def test_api_logout_revokes_the_token_and_closes_its_sockets(server: Server, room: str) -> None:
    """After POST /api/auth/logout the token gets 401 and its open socket is closed with 1008."""
    account = server.register()
    other = server.register()
    http = server.client(headers=account.headers)
    with (
        server.ws(f"/ws/rooms/{room}", account) as mine,
        server.ws(f"/ws/rooms/{room}", other) as theirs,
    ):
        welcome(mine)
        welcome(theirs)
        assert http.post("/api/auth/logout").status_code == 204
        assert closed_with(mine).code == 1008
        # Another user's socket lives on.
        theirs.send('{"type":"message","body":"still here"}')
        assert recv_until(theirs, of_type("message"))["body"] == "still here"
    assert http.get("/api/rooms").status_code == 401
    assert http.post("/api/auth/logout").status_code == 401


def test_revoked_token_cannot_open_a_socket(server: Server, room: str) -> None:
    """A signed-out token is refused with 1008 when it tries to connect again."""
    account = server.register()
    assert server.client(headers=account.headers).post("/api/auth/logout").status_code == 204
    with server.ws(f"/ws/rooms/{room}", account) as ws:
        assert closed_with(ws).code == 1008


def test_logout_leaves_the_users_other_tokens_alone(server: Server, room: str) -> None:
    """Signing out one session (token) keeps the same user's other sessions working."""
    account = server.register()
    http = server.client()
    second = http.post(
        "/api/auth/token", data={"username": account.username, "password": PASSWORD}
    ).json()["access_token"]
    assert server.client(headers=account.headers).post("/api/auth/logout").status_code == 204
    r = http.get("/api/rooms", headers={"Authorization": f"Bearer {second}"})
    assert r.status_code == 200


def test_page_logout_closes_the_browsers_sockets(make_server: Callable[..., Server]) -> None:
    """The sign-out form revokes the cookie's token, so the page's socket closes with 1008."""
    srv = make_server()
    name = unique()
    srv.register(name)
    http = srv.client()
    csrf = http.get("/login").cookies["csrf_token"]
    r = http.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": csrf})
    assert r.status_code == 303
    cookie, csrf = http.cookies["access_token"], http.cookies["csrf_token"]
    with srv.ws(
        "/ws/rooms/general", token=None, headers={"Cookie": f"access_token={cookie}"}
    ) as ws:
        welcome(ws)
        assert http.post("/logout", data={"csrf_token": csrf}).status_code == 303
        assert closed_with(ws).code == 1008
