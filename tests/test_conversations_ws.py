"""Conversations on the room socket (SPEC "Conversations (v2)", "Room WebSocket"): who may
open a room's socket, what membership changes do to open sockets, and what the admins'
live view shows; one process on SQLite."""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.client import ClientConnection

from chat.closecodes import CloseCode
from tests.conftest import Account, Server, make_settings, recv, unique
from tests.ws_helpers import Frame, frames_until, own_message, send, welcome

NOT_FOUND, FORBIDDEN = CloseCode.NOT_FOUND, CloseCode.FORBIDDEN


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's own server: no message rate limit and room for many sockets per user."""
    settings = make_settings(
        tmp_path_factory.mktemp("conversations"),
        rate_burst=10**6,
        rate_per_sec=10**6,
        max_connections_per_user=200,
    )
    server = Server(settings)
    server.start()
    try:
        server.admin = server.register(unique("admin"))
        yield server
    finally:
        server.stop()


def call(
    server: Server, account: Account, method: str, path: str, body: Any = None
) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15, headers=account.headers) as http:
        return http.request(method, path, json=body)


def make_room(server: Server, owner: Account, kind: str = "public") -> str:
    name = unique("room-")
    r = call(server, owner, "POST", "/api/rooms", {"name": name, "kind": kind})
    assert r.status_code == 201, r.text
    return name


def add(server: Server, by: Account, room: str, who: Account) -> None:
    r = call(server, by, "PUT", f"/api/rooms/{room}/members/{who.username}")
    assert r.status_code == 204, r.text


def members(server: Server, account: Account, room: str) -> dict[str, str]:
    r = call(server, account, "GET", f"/api/rooms/{room}/members")
    assert r.status_code == 200, r.text
    return {m["username"]: m["role"] for m in r.json()}


def open_dm(server: Server, caller: Account, *others: Account) -> str:
    r = call(server, caller, "POST", "/api/dms", {"users": [o.username for o in others]})
    assert r.status_code in (200, 201), r.text
    name: str = r.json()["name"]
    return name


def active_users(server: Server) -> dict[str, list[str]]:
    assert server.admin is not None
    r = call(server, server.admin, "GET", "/api/admin/active-users")
    assert r.status_code == 200, r.text
    rooms: dict[str, list[str]] = r.json()["rooms"]
    return rooms


def refused(server: Server, account: Account, room: str) -> tuple[list[Frame], Close]:
    """Open a socket that the server must close: every frame it got first, and the close."""
    with server.ws(f"/ws/rooms/{room}", account) as ws:
        return read_to_close(ws)


def read_to_close(ws: ClientConnection, timeout: float = 5) -> tuple[list[Frame], Close]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            frames.append(recv(ws, remaining))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "connection dropped without a close frame"
        return frames, closed.rcvd
    except TimeoutError:
        pass
    raise AssertionError(f"the server did not close the connection; got {frames}")


def welcomed(
    stack: contextlib.ExitStack, server: Server, account: Account, room: str
) -> ClientConnection:
    """A socket on `room`, open until `stack` closes, once its welcome has come."""
    ws = stack.enter_context(server.ws(f"/ws/rooms/{room}", account))
    welcome(ws)
    return ws


def say(ws: ClientConnection, body: str) -> Frame:
    """Send a message and wait for its acknowledgement: proof the socket still serves."""
    nonce = unique("n")
    send(ws, {"type": "message", "body": body, "nonce": nonce})
    return frames_until(ws, own_message(nonce))[-1]


def member_frame(room: str, event: str, user: Account, role: str | None = None) -> Frame:
    frame: Frame = {"type": "member", "room": room, "event": event, "user": user.username}
    if role is not None:
        frame["role"] = role
    return frame


def presence_of(user: Account, event: str = "join") -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "presence" and f["event"] == event and f["user"] == user.username


def next_member_frame(ws: ClientConnection, timeout: float = 5) -> Frame:
    return frames_until(ws, lambda f: f["type"] == "member", timeout)[-1]


# --- Who may open a room's socket -------------------------------------------------------


def test_outsiders_of_private_rooms_and_dms_are_told_the_room_does_not_exist(
    srv: Server,
) -> None:
    """A private room's non-member, and a third person (even a site admin) on a DM, are
    closed with 4404 and the same reason as for a name never used, before any frame; a
    member of the private room and the DM's members are welcomed (the controls)."""
    owner, insider, outsider = srv.register(), srv.register(), srv.register()
    admin = srv.admin
    assert admin is not None
    private = make_room(srv, owner, "private")
    add(srv, owner, private, insider)
    dm = open_dm(srv, owner, insider)
    frames, unknown = refused(srv, outsider, unique("no-such-room-"))
    assert frames == [] and unknown.code == NOT_FOUND

    for who, room in ((outsider, private), (outsider, dm), (admin, dm)):
        frames, close = refused(srv, who, room)
        assert frames == [], (who.username, room)
        assert (close.code, close.reason) == (unknown.code, unknown.reason), (who.username, room)

    for who, room in ((owner, private), (insider, private), (owner, dm), (insider, dm)):
        with srv.ws(f"/ws/rooms/{room}", who) as ws:
            assert welcome(ws)["room"] == room


def test_an_outsider_never_shows_up_in_a_private_room(srv: Server) -> None:
    """A private room's non-member, refused, never appears in its presence, its welcome's
    users or the admins' view, and gets none of its presence, typing or messages; a member
    who opens a socket next does appear (the control)."""
    owner, insider, outsider = srv.register(), srv.register(), srv.register()
    room = make_room(srv, owner, "private")
    add(srv, owner, room, insider)
    with srv.ws(f"/ws/rooms/{room}", owner) as mine:
        assert welcome(mine)["users"] == [owner.username]
        with srv.ws(f"/ws/rooms/{room}", outsider) as theirs:
            # The room is busy while the outsider knocks: a message and a typing hint.
            say(mine, "anyone here?")
            send(mine, {"type": "typing"})
            frames, close = read_to_close(theirs)
        assert frames == [] and close.code == NOT_FOUND
        with srv.ws(f"/ws/rooms/{room}", insider) as member:
            assert welcome(member)["users"] == sorted([owner.username, insider.username])
            seen = frames_until(mine, presence_of(insider))
        assert all(f.get("user") != outsider.username for f in seen), seen
        assert outsider.username not in seen[-1]["users"]
        assert active_users(srv)[room] == [owner.username]
    assert members(srv, owner, room) == {owner.username: "owner", insider.username: "member"}


def test_a_banned_user_is_refused_4403_on_a_public_room(srv: Server) -> None:
    """A user banned from a public room is closed with 4403 before any frame and is not made
    a member; another user opening the same room is welcomed (the control)."""
    owner, banned, other = srv.register(), srv.register(), srv.register()
    room = make_room(srv, owner)
    r = call(srv, owner, "PUT", f"/api/rooms/{room}/bans/{banned.username}")
    assert r.status_code == 204, r.text
    frames, close = refused(srv, banned, room)
    assert frames == [] and close.code == FORBIDDEN
    with srv.ws(f"/ws/rooms/{room}", other) as ws:
        assert welcome(ws)["room"] == room
    assert members(srv, owner, room) == {owner.username: "owner", other.username: "member"}


def test_an_admin_looking_into_a_private_room_does_not_join_it(srv: Server) -> None:
    """Opening a public room's socket makes one a member, and only a public room's: a site
    admin who opens a private room's socket is welcomed but not made a member, and its
    members hear no `member` frame; the same admin opening a public room joins it (the
    control)."""
    admin, owner = srv.admin, srv.register()
    assert admin is not None
    private, public = make_room(srv, owner, "private"), make_room(srv, owner)
    for room in (private, public):
        with srv.ws(f"/ws/rooms/{room}", owner) as mine:
            welcome(mine)
            with srv.ws(f"/ws/rooms/{room}", admin) as theirs:
                assert welcome(theirs)["room"] == room
                seen = frames_until(mine, presence_of(admin))
        joined = [f for f in seen if f["type"] == "member"]
        if room == private:
            assert joined == []
            assert members(srv, owner, room) == {owner.username: "owner"}
        else:
            assert joined == [member_frame(room, "join", admin, "member")]
            assert members(srv, owner, room) == {owner.username: "owner", admin.username: "member"}


# --- Membership changes and open sockets ----------------------------------------------------


@pytest.mark.parametrize("event", ["kick", "ban"])
def test_kick_and_ban_close_the_users_sockets_in_that_room_only(srv: Server, event: str) -> None:
    """A kick (DELETE member) or a ban (PUT ban) closes every socket of the user in that room
    with 4403 within a second, and the room's other sockets get `{"type":"member","event":
    ...,"user":...}` and the user's presence leave; the user's socket in another room stays
    open and serves (the control)."""
    owner, victim = srv.register(), srv.register()
    room, elsewhere = make_room(srv, owner), make_room(srv, owner)
    with contextlib.ExitStack() as stack:
        # One after another: each is in the room (and a member) before the next opens.
        mine, tab1, tab2, other = (
            welcomed(stack, srv, who, where)
            for who, where in ((owner, room), (victim, room), (victim, room), (victim, elsewhere))
        )
        frames_until(mine, presence_of(victim))
        if event == "kick":
            r = call(srv, owner, "DELETE", f"/api/rooms/{room}/members/{victim.username}")
        else:
            r = call(srv, owner, "PUT", f"/api/rooms/{room}/bans/{victim.username}")
        assert r.status_code == 204, r.text
        started = time.monotonic()
        for tab in (tab1, tab2):
            assert read_to_close(tab, 2)[1].code == FORBIDDEN
        assert time.monotonic() - started < 1.0
        assert next_member_frame(mine) == member_frame(room, event, victim)
        assert frames_until(mine, presence_of(victim, "leave"))[-1]["users"] == [owner.username]
        assert say(other, "still here")["user"] == victim.username
    assert victim.username not in members(srv, owner, room)
    assert victim.username in members(srv, owner, elsewhere)


def test_joins_leaves_and_role_changes_reach_the_rooms_sockets(srv: Server) -> None:
    """Joining a public room (PUT member, or opening its socket), being added to a private
    room, a role change and leaving each reach the room's sockets as a `member` frame with
    the right fields (`role` on a join and a role change only); leaving closes the leaver's
    own sockets in that room with 4403, and only there."""
    owner, ann, bob, cy = srv.register(), srv.register(), srv.register(), srv.register()
    room, private = make_room(srv, owner), make_room(srv, owner, "private")
    with srv.ws(f"/ws/rooms/{room}", owner) as mine, srv.ws(f"/ws/rooms/{private}", owner) as priv:
        welcome(mine)
        welcome(priv)

        add(srv, ann, room, ann)
        assert next_member_frame(mine) == member_frame(room, "join", ann, "member")
        with srv.ws(f"/ws/rooms/{room}", bob) as bobs:
            welcome(bobs)
            assert next_member_frame(mine) == member_frame(room, "join", bob, "member")
            # Bob is a member already: his second socket announces no join.
            with srv.ws(f"/ws/rooms/{room}", bob) as again:
                welcome(again)
            add(srv, owner, private, cy)
            assert next_member_frame(priv) == member_frame(private, "join", cy, "member")

            body = {"role": "moderator"}
            r = call(srv, owner, "PATCH", f"/api/rooms/{room}/members/{ann.username}", body)
            assert r.status_code == 204, r.text
            assert next_member_frame(mine) == member_frame(room, "role", ann, "moderator")
            assert next_member_frame(bobs) == member_frame(room, "role", ann, "moderator")

            with srv.ws(f"/ws/rooms/{private}", cy) as cys, srv.ws(f"/ws/rooms/{room}", cy) as kept:
                welcome(cys)
                welcome(kept)
                r = call(srv, cy, "DELETE", f"/api/rooms/{private}/members/{cy.username}")
                assert r.status_code == 204, r.text
                assert read_to_close(cys, 2)[1].code == FORBIDDEN
                assert next_member_frame(priv) == member_frame(private, "leave", cy)
                assert say(kept, "my other room is fine")["user"] == cy.username

            r = call(srv, bob, "DELETE", f"/api/rooms/{room}/members/{bob.username}")
            assert r.status_code == 204, r.text
            assert read_to_close(bobs, 2)[1].code == FORBIDDEN
        assert next_member_frame(mine) == member_frame(room, "join", cy, "member")
        assert next_member_frame(mine) == member_frame(room, "leave", bob)
    assert members(srv, owner, room) == {
        owner.username: "owner",
        ann.username: "moderator",
        cy.username: "member",
    }


def test_after_a_kick_one_may_come_back_after_a_ban_only_once_it_is_lifted(srv: Server) -> None:
    """A user kicked from a public room may open its socket again and is a member again; a
    banned one is refused with 4403 until the ban is lifted, then welcomed."""
    owner, user = srv.register(), srv.register()
    room = make_room(srv, owner)
    path = f"/ws/rooms/{room}"
    with srv.ws(path, owner) as mine:
        welcome(mine)
        with srv.ws(path, user) as ws:
            welcome(ws)
            r = call(srv, owner, "DELETE", f"/api/rooms/{room}/members/{user.username}")
            assert r.status_code == 204, r.text
            assert read_to_close(ws)[1].code == FORBIDDEN
        frames_until(mine, lambda f: f == member_frame(room, "kick", user))
        assert user.username not in members(srv, owner, room)
        with srv.ws(path, user) as ws:
            welcome(ws)
            assert next_member_frame(mine) == member_frame(room, "join", user, "member")
            assert members(srv, owner, room)[user.username] == "member"
            assert say(ws, "back again")["user"] == user.username

        r = call(srv, owner, "PUT", f"/api/rooms/{room}/bans/{user.username}")
        assert r.status_code == 204, r.text
        assert refused(srv, user, room)[1].code == FORBIDDEN
        assert user.username not in members(srv, owner, room)
        r = call(srv, owner, "DELETE", f"/api/rooms/{room}/bans/{user.username}")
        assert r.status_code == 204, r.text
        with srv.ws(path, user) as ws:
            welcome(ws)
            assert say(ws, "unbanned")["user"] == user.username


def test_once_removed_from_a_private_room_it_no_longer_exists_for_them(srv: Server) -> None:
    """Kicked or banned from a private room, a member's socket closes with 4403, and opening
    it again is refused like an unknown room (4404), a ban telling them no more; a member
    still in it opens it (the control)."""
    owner, kicked, banned, stays = (srv.register() for _ in range(4))
    room = make_room(srv, owner, "private")
    for who in (kicked, banned, stays):
        add(srv, owner, room, who)
    unknown = refused(srv, kicked, unique("no-such-room-"))[1]
    with contextlib.ExitStack() as stack:
        k, b = welcomed(stack, srv, kicked, room), welcomed(stack, srv, banned, room)
        r = call(srv, owner, "DELETE", f"/api/rooms/{room}/members/{kicked.username}")
        assert r.status_code == 204, r.text
        r = call(srv, owner, "PUT", f"/api/rooms/{room}/bans/{banned.username}")
        assert r.status_code == 204, r.text
        assert read_to_close(k)[1].code == read_to_close(b)[1].code == FORBIDDEN
    for who in (kicked, banned):
        frames, close = refused(srv, who, room)
        assert frames == [] and (close.code, close.reason) == (unknown.code, unknown.reason)
    with srv.ws(f"/ws/rooms/{room}", stays) as ws:
        assert welcome(ws)["room"] == room


def test_no_socket_admitted_around_a_ban_stays_open(srv: Server) -> None:
    """Sockets a user opens on a public room while being banned from it, some admitted
    before, some while, some after: none stays open (each is welcomed and closed 4403, or
    refused 4403), and the user is not left in the room's presence. Best effort at the
    admission race (SQLite serializes the writes; the cluster suite provokes it exactly):
    at least one socket was admitted before the ban, and the room's other socket stays."""
    owner, victim = srv.register(), srv.register()
    room = make_room(srv, owner)
    path = f"/ws/rooms/{room}"
    count = 24
    start = threading.Barrier(count + 1)
    outcomes: list[tuple[bool, int]] = []

    def knock(_: int) -> tuple[bool, int]:
        start.wait(10)
        with srv.ws(path, victim) as ws:
            frames, close = read_to_close(ws, 10)
        return bool(frames) and frames[0]["type"] == "welcome", close.code

    with srv.ws(path, owner) as mine, ThreadPoolExecutor(count) as pool:
        welcome(mine)
        tries = [pool.submit(knock, i) for i in range(count)]
        start.wait(10)
        # Let a few handshakes through first, then ban while the rest are being admitted.
        frames_until(mine, presence_of(victim))
        r = call(srv, owner, "PUT", f"/api/rooms/{room}/bans/{victim.username}")
        assert r.status_code == 204, r.text
        outcomes = [t.result(20) for t in tries]
        assert {code for _, code in outcomes} == {FORBIDDEN}, outcomes
        assert any(welcomed for welcomed, _ in outcomes), outcomes
        assert say(mine, "still here")["user"] == owner.username
    assert victim.username not in active_users(srv).get(room, [])
    assert refused(srv, victim, room)[1].code == FORBIDDEN


# --- The admins' live view ------------------------------------------------------------------


def test_the_admins_view_never_shows_a_dm(srv: Server) -> None:
    """`GET /api/admin/active-users` and `/ws/admin` stats frames show the public and private
    rooms people are in, never a DM, even while both its members are in it."""
    admin, ann, bob = srv.admin, srv.register(), srv.register()
    assert admin is not None
    public, private = make_room(srv, ann), make_room(srv, ann, "private")
    dm = open_dm(srv, ann, bob)
    with contextlib.ExitStack() as stack:
        for room in (public, private, dm):
            welcomed(stack, srv, ann, room)
        # Both are in the DM: its presence is there to hide.
        b3 = stack.enter_context(srv.ws(f"/ws/rooms/{dm}", bob))
        assert welcome(b3)["users"] == sorted([ann.username, bob.username])
        rooms = active_users(srv)
        assert rooms[public] == rooms[private] == [ann.username]
        assert dm not in rooms
        with srv.ws("/ws/admin", admin) as view:
            deadline = time.monotonic() + 5
            while True:
                stats = recv(view, max(deadline - time.monotonic(), 0.01))
                if stats["type"] == "alert":
                    continue
                assert stats["type"] == "stats", stats
                assert dm not in stats["rooms"], stats
                if stats["rooms"].get(public) == [ann.username]:
                    break
            assert stats["rooms"][private] == [ann.username]
