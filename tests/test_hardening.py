"""Transport and identity hardening: compression off, Secure cookies, no posting as others."""

import json
from collections.abc import Callable

from tests.conftest import PASSWORD, Account, Server, of_type, recv_until
from tests.ws_helpers import welcome


def test_per_message_deflate_is_off(server: Server, user: Account, room: str) -> None:
    """A client offering permessage-deflate gets no compression (memory and CRIME-style risks)."""
    with server.ws(f"/ws/rooms/{room}", user, compression="deflate") as ws:
        welcome(ws)
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


def test_session_cookie_is_secure_behind_https(make_server: Callable[..., Server]) -> None:
    """With CHAT_COOKIE_SECURE the session cookie carries Secure, HttpOnly and SameSite=Lax."""
    srv = make_server(cookie_secure=True)
    account = srv.register()
    http = srv.client()
    csrf = http.get("/login").cookies["csrf_token"]
    # Over plain HTTP the client keeps the (Secure) CSRF cookie to itself: send it by hand.
    r = http.post(
        "/login",
        data={"username": account.username, "password": PASSWORD, "csrf_token": csrf},
        headers={"Cookie": f"csrf_token={csrf}"},
    )
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie")
    assert cookie.startswith("access_token=")
    lowered = cookie.lower()
    assert "secure" in lowered and "httponly" in lowered and "samesite=lax" in lowered


def test_rest_post_cannot_claim_another_author(server: Server, user: Account, room: str) -> None:
    """A `user` field in the REST body is refused: the author is always the token's user."""
    http = server.client(headers=user.headers)
    r = http.post(f"/api/rooms/{room}/messages", json={"body": "hi", "user": "somebody"})
    assert r.status_code == 422
    r = http.post(f"/api/rooms/{room}/messages", json={"body": "hi"})
    assert r.status_code == 201 and r.json()["user"] == user.username


def test_ws_frame_cannot_claim_another_author(server: Server, user: Account, room: str) -> None:
    """A `user` field in a message frame changes nothing: the author is the socket's user."""
    with server.ws(f"/ws/rooms/{room}", user) as ws:
        welcome(ws)
        ws.send(json.dumps({"type": "message", "body": "mine", "user": "somebody", "id": 1}))
        echo = recv_until(ws, of_type("message"))
    assert echo["user"] == user.username and echo["body"] == "mine"
