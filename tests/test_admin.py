"""The admin surface: `GET /api/admin/active-users` and the live `/ws/admin` view."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.conftest import Account, Server, recv, unique
from tests.ws_helpers import closed_with, post, token_for, welcome

CLOSE_POLICY = 1008
STATS_KEYS = {
    "type",
    "rooms",
    "connections",
    "messages_per_sec",
    "loop_lag_ms",
    "deliveries_per_sec",
}
# A stats frame for a presence change must come well before the next periodic refresh (1 s).
LIVE_WITHIN_SECS = 0.6


def active_users(server: Server, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        return http.get("/api/admin/active-users", headers=headers)


def admin_rooms(server: Server) -> dict[str, list[str]]:
    assert server.admin is not None
    r = active_users(server, server.admin.headers)
    assert r.status_code == 200, r.text
    return r.json()["rooms"]


def room_path(room: str) -> str:
    return f"/ws/rooms/{room}"


# --- GET /api/admin/active-users -----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Cookie": "access_token=not-a-jwt"}],
    ids=["no token", "garbage bearer", "garbage cookie"],
)
def test_active_users_needs_a_token(server: Server, headers: dict[str, str]) -> None:
    """Without a valid token the active-users endpoint answers 401."""
    assert active_users(server, headers).status_code == 401


def test_active_users_is_for_admins_only(server: Server) -> None:
    """A signed-in user who is not an admin gets 403 from the active-users endpoint."""
    account = server.register()
    assert not account.is_admin
    assert active_users(server, account.headers).status_code == 403


def test_active_users_lists_rooms_with_active_users(server: Server) -> None:
    """The admin sees each room with active users, their names sorted and counted once, and no
    room that nobody is in; a room drops out once its last user leaves."""
    zed, amy = server.register(unique("zed")), server.register(unique("amy"))
    room, empty = server.create_room(zed), server.create_room(zed)
    with server.ws(room_path(room), zed) as z1:
        welcome(z1)
        assert admin_rooms(server)[room] == [zed.username]
        with server.ws(room_path(room), amy) as a1, server.ws(room_path(room), zed) as z2:
            welcome(a1)
            welcome(z2)
            rooms = admin_rooms(server)
            assert rooms[room] == [amy.username, zed.username]
            assert empty not in rooms
            assert all(users == sorted(set(users)) and users for users in rooms.values())
    deadline = time.monotonic() + 3
    while room in admin_rooms(server):
        assert time.monotonic() < deadline, "the room still lists users who left"
        time.sleep(0.05)


# --- /ws/admin -------------------------------------------------------------------------------


def refused_admin_socket(server: Server, account: Account, case: str) -> dict[str, Any]:
    assert server.admin is not None
    return {
        "missing token": {},
        "garbage token": {"token": "not-a-jwt"},
        "non-admin bearer": {"headers": {"Authorization": f"Bearer {account.token}"}},
        "non-admin cookie": {"headers": {"Cookie": f"access_token={account.token}"}},
        "admin from a foreign origin": {
            "headers": {
                "Origin": "http://evil.example",
                "Cookie": f"access_token={server.admin.token}",
            }
        },
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "missing token",
        "garbage token",
        "non-admin bearer",
        "non-admin cookie",
        "admin from a foreign origin",
    ],
)
def test_admin_socket_refuses_with_1008(server: Server, case: str) -> None:
    """`/ws/admin` closes with 1008, before any stats, for all but an admin on an allowed origin."""
    account = server.register()
    with (
        server.ws("/ws/admin", **refused_admin_socket(server, account, case)) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CLOSE_POLICY
    assert closed.value.rcvd.reason


def next_stats(ws: ClientConnection, within: float) -> dict[str, Any]:
    """The next stats frame, past any alerts (a registration's, raised in the background)."""
    deadline = time.monotonic() + within
    frame = recv(ws, within)
    while frame["type"] == "alert":
        frame = recv(ws, max(deadline - time.monotonic(), 0.01))
    assert frame["type"] == "stats", frame
    assert set(frame) == STATS_KEYS, frame
    return frame


def stats_until(ws: ClientConnection, predicate: Any, within: float) -> dict[str, Any]:
    """The first stats frame matching `predicate` within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no stats frame matched in time"
        frame = next_stats(ws, remaining)
        if predicate(frame):
            return frame


def test_admin_socket_streams_live_stats(make_server: Any) -> None:
    """The admin's `/ws/admin` sends stats frames (rooms, connections, messages per second) at
    once and again right away whenever someone joins or leaves a room."""
    srv = make_server()
    assert srv.admin is not None
    zed, amy = srv.register(unique("zed")), srv.register(unique("amy"))
    room = srv.create_room(zed)
    with srv.ws("/ws/admin", srv.admin) as admin:
        first = next_stats(admin, 5)
        assert first["rooms"] == {} and first["connections"] == 0
        assert first["messages_per_sec"] == 0 and first["loop_lag_ms"] >= 0

        # Each change follows a frame just received, so the periodic refresh is about a
        # second away: a matching frame within LIVE_WITHIN_SECS is the live update.
        with srv.ws(room_path(room), zed) as wz:
            welcome(wz)
            joined = stats_until(admin, lambda f: f["rooms"] != {}, LIVE_WITHIN_SECS)
            assert (joined["rooms"], joined["connections"]) == ({room: [zed.username]}, 1)

            with srv.ws(room_path(room), amy) as wa:
                welcome(wa)
                both = stats_until(
                    admin, lambda f: len(f["rooms"].get(room, [])) > 1, LIVE_WITHIN_SECS
                )
                assert both["rooms"] == {room: [amy.username, zed.username]}
                assert both["connections"] == 2

                with srv.ws(room_path(room), zed) as second_tab:
                    welcome(second_tab)
                    tabs = stats_until(admin, lambda f: f["connections"] == 3, 3)
                    assert tabs["rooms"] == {room: [amy.username, zed.username]}
            left = stats_until(admin, lambda f: f["connections"] == 1, LIVE_WITHIN_SECS)
            assert left["rooms"] == {room: [zed.username]}

            with httpx.Client(base_url=srv.url) as http:
                for i in range(5):
                    assert post(http, zed, room, f"m{i}").status_code == 201
            busy = stats_until(admin, lambda f: f["messages_per_sec"] > 0, 3.5)
            assert isinstance(busy["messages_per_sec"], int | float)
            assert busy["messages_per_sec"] <= 5
        gone = stats_until(admin, lambda f: f["connections"] == 0, 3)
        assert gone["rooms"] == {}


# --- The admin socket ends with its session ----------------------------------------------


def second_token(server: Server, account: Account) -> Account:
    """Another session (token) of the same account."""
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.post(
            "/api/auth/token", data={"username": account.username, "password": account.password}
        )
    assert r.status_code == 200, r.text
    return replace(account, token=r.json()["access_token"])


def set_admin(server: Server, account: Account, is_admin: bool) -> None:
    """Change the role in the database itself, as any future way of changing it would."""

    async def update() -> None:
        engine = create_async_engine(server.settings.async_database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text("UPDATE users SET is_admin = :v WHERE id = :id"),
                    {"v": is_admin, "id": account.id},
                )
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, update()).result()


def closes_with_1008_within(ws: ClientConnection, within: float) -> float:
    """Seconds until the server closed `ws` with 1008, skipping stats frames; at most `within`."""
    started = time.monotonic()
    assert closed_with(ws, timeout=within).code == CLOSE_POLICY
    return time.monotonic() - started


def test_admin_socket_closes_1008_at_once_on_sign_out(make_server: Any) -> None:
    """Signing a token out closes the admin views opened with it at once (1008); the same
    admin's view on another session streams on."""
    srv = make_server()
    assert srv.admin is not None
    other_session = second_token(srv, srv.admin)
    with srv.ws("/ws/admin", srv.admin) as view, srv.ws("/ws/admin", other_session) as kept:
        next_stats(view, 5)
        next_stats(kept, 5)
        with httpx.Client(base_url=srv.url, headers=srv.admin.headers) as http:
            assert http.post("/api/auth/logout").status_code == 204
        # At once: well before the view's own once-a-second recheck would see it.
        assert closes_with_1008_within(view, 0.9) < 0.9
        next_stats(kept, 3)
        next_stats(kept, 3)


def test_admin_socket_closes_1008_when_its_token_expires(server: Server) -> None:
    """A view whose token expires while it is open is closed with 1008 then, not later."""
    assert server.admin is not None
    short = replace(server.admin, token=token_for(server, server.admin, timedelta(seconds=2)))
    with server.ws("/ws/admin", short) as view:
        next_stats(view, 5)
        started = time.monotonic()
        assert closed_with(view, timeout=6).code == CLOSE_POLICY
        assert time.monotonic() - started < 3.5


def test_admin_socket_closes_1008_when_the_role_is_taken_away(server: Server) -> None:
    """An admin who stops being one loses the view within about a second; while still an
    admin the view streams on (the control)."""
    deputy = server.register()
    set_admin(server, deputy, True)
    with server.ws("/ws/admin", deputy) as view:
        # Two periodic refreshes: the recheck passes while the role is held.
        for _ in range(3):
            next_stats(view, 3)
        set_admin(server, deputy, False)
        assert closes_with_1008_within(view, 2.5) < 2.5
    with server.ws("/ws/admin", deputy) as again, pytest.raises(ConnectionClosed) as closed:
        again.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_POLICY
