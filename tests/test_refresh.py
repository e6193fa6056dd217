"""API refresh tokens: rotated on every use, stored hashed, and a reused one ends its session."""

import hashlib

import httpx

from tests.conftest import Server
from tests.test_sessions import api_sign_in, bearer, query, status_of
from tests.ws_helpers import closed_with, welcome


def refresh(server: Server, token: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        return http.post("/api/auth/refresh", data={"refresh_token": token})


def test_refresh_returns_a_new_pair_and_retires_the_old(server: Server) -> None:
    """The token answer carries a refresh token lasting the session's life; refreshing gives
    a new access token (accepted) and a new refresh token, which refreshes in turn."""
    first = api_sign_in(server, server.register())
    assert first["refresh_expires_in"] == server.settings.session_days * 86400
    r = refresh(server, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert status_of(server, bearer(second["access_token"])) == 200
    assert refresh(server, second["refresh_token"]).status_code == 200


def test_a_reused_refresh_token_ends_the_whole_family(server: Server, room: str) -> None:
    """Presenting a retired refresh token again gets 401 and ends its session: the access
    and refresh tokens issued since are refused, and its sockets close 1008."""
    account = server.register()
    stolen = api_sign_in(server, account)
    bystander = api_sign_in(server, account)
    owner = refresh(server, stolen["refresh_token"]).json()
    with server.ws(f"/ws/rooms/{room}", token=owner["access_token"]) as ws:
        welcome(ws)
        assert refresh(server, stolen["refresh_token"]).status_code == 401
        assert closed_with(ws).code == 1008
    assert status_of(server, bearer(owner["access_token"])) == 401
    assert status_of(server, bearer(stolen["access_token"])) == 401
    assert refresh(server, owner["refresh_token"]).status_code == 401
    # The account's other session is not of that family.
    assert status_of(server, bearer(bystander["access_token"])) == 200
    assert refresh(server, bystander["refresh_token"]).status_code == 200


def test_refresh_tokens_are_stored_hashed(server: Server) -> None:
    """The database holds the SHA-256 of a refresh token, never the token."""
    pair = api_sign_in(server, server.register())
    token = pair["refresh_token"]
    digest = hashlib.sha256(token.encode()).hexdigest()
    rows = query(server, f"SELECT token_hash FROM refresh_tokens WHERE token_hash = '{digest}'")
    assert rows == [(digest,)]
    assert query(server, f"SELECT 1 FROM refresh_tokens WHERE token_hash = '{token}'") == []


def test_refresh_is_refused_after_sign_out_and_for_unknown_tokens(server: Server) -> None:
    """A refresh token of a signed-out session, a made-up one, or an oversized one is
    refused (control: a live one refreshes)."""
    account = server.register()
    pair = api_sign_in(server, account)
    live = api_sign_in(server, account)
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.post("/api/auth/logout", headers=bearer(pair["access_token"]))
        assert r.status_code == 204
    assert refresh(server, pair["refresh_token"]).status_code == 401
    assert refresh(server, "made-up").status_code == 401
    assert refresh(server, "x" * 10_000).status_code == 422
    assert refresh(server, live["refresh_token"]).status_code == 200
