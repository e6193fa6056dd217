"""SPEC v2 "Attention" on live sockets: `/ws/me` (admission and close codes as a room
socket's), `read` frames to all of a user's sockets, `activity` frames (at most once a
second per room, never to a socket looking at that room), and `member` / `room` frames."""

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from chat.closecodes import CloseCode
from tests.conftest import Account, Server, make_settings, recv, unique
from tests.test_attention import join, say
from tests.test_rooms_api import api
from tests.ws_helpers import Frame, closed_with, send, welcome


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: its accounts post and change memberships quickly."""
    srv = Server(
        make_settings(
            tmp_path_factory.mktemp("ws-me"),
            membership_burst=10**6,
            rate_burst=10**6,
        )
    )
    srv.start()
    try:
        srv.admin = srv.register(unique("admin"))
        yield srv
    finally:
        srv.stop()


@contextmanager
def me(server: Server, account: Account) -> Iterator[ClientConnection]:
    """A `/ws/me` socket past its `ready` frame."""
    with server.ws("/ws/me", account) as ws:
        assert recv(ws) == {"type": "ready", "user": account.username}
        yield ws


def frames_for(ws: ClientConnection, secs: float) -> list[tuple[float, Frame]]:
    """Every frame that arrives within `secs`, with when (monotonic) it arrived."""
    got: list[tuple[float, Frame]] = []
    deadline = time.monotonic() + secs
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            frame = recv(ws, remaining)
        except TimeoutError:
            break
        got.append((time.monotonic(), frame))
    return got


def wait_for(ws: ClientConnection, want: Frame, timeout: float = 5) -> list[Frame]:
    """Frames up to and including one that has every key and value of `want`."""
    seen: list[Frame] = []
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        seen.append(recv(ws, remaining))
        if all(seen[-1].get(k) == v for k, v in want.items()):
            return seen
    raise AssertionError(f"no {want}; got {seen}")


def test_me_socket_admission_and_close_codes(make_server: Any) -> None:
    """`/ws/me` admits like a room socket: no token, a bad token or a foreign origin → 1008;
    past the sockets allowed per user (room sockets count too) → 4429; a socket opened
    starts with `ready`, answers a client frame with an error, and closes with 1008 when its
    session ends."""
    srv: Server = make_server(max_connections_per_user=2)
    amy = srv.register()
    room = srv.create_room(amy)
    with srv.ws("/ws/me") as ws:
        assert closed_with(ws).code == CloseCode.UNAUTHENTICATED
    with srv.ws("/ws/me", token="not-a-token") as ws:
        assert closed_with(ws).code == CloseCode.UNAUTHENTICATED
    with srv.ws("/ws/me", amy, headers={"Origin": "https://evil.example"}) as ws:
        assert closed_with(ws).code == CloseCode.UNAUTHENTICATED
    with srv.ws(f"/ws/rooms/{room}", amy) as in_room, me(srv, amy) as first:
        welcome(in_room)
        with srv.ws("/ws/me", amy) as third:
            assert closed_with(third).code == CloseCode.TOO_MANY
        send(first, {"type": "message", "body": "x"})
        assert recv(first)["type"] == "error"
        r = api(srv, amy).post("/api/auth/logout")
        assert r.status_code == 204, r.text
        assert closed_with(first).code == CloseCode.UNAUTHENTICATED


def test_me_socket_refuses_a_handshake_flood(make_server: Any) -> None:
    """Handshakes past the user's rate → 4429 on `/ws/me`, as on a room socket; the first
    ones get in (the control)."""
    srv: Server = make_server(ws_handshakes_burst=2, ws_handshakes_per_sec=0.01)
    amy = srv.register()
    for _ in range(2):
        with me(srv, amy):
            pass
    with srv.ws("/ws/me", amy) as ws:
        assert closed_with(ws).code == CloseCode.TOO_MANY


def test_a_read_marker_reaches_all_the_users_sockets(server: Server) -> None:
    """A marker moved by `PUT .../read` reaches every socket of the user, as `{"type":
    "read", "room", "up_to"}`: `/ws/me` and room sockets, of that room and others; a no-op
    (a lower value) sends nothing, which the next real move shows (it is the next frame)."""
    amy, bob = server.register(), server.register()
    room, other = server.create_room(amy), server.create_room(amy)
    join(server, bob, room)
    ids = [say(server, amy, room) for _ in range(3)]
    with (
        me(server, bob) as mine,
        server.ws(f"/ws/rooms/{room}", bob) as here,
        server.ws(f"/ws/rooms/{other}", bob) as there,
        server.ws(f"/ws/rooms/{room}", amy) as amys,
    ):
        for ws in (here, there, amys):
            welcome(ws)
        http = api(server, bob)
        assert http.put(f"/api/rooms/{room}/read", json={"up_to": ids[1]}).status_code == 204
        want = {"type": "read", "room": room, "up_to": ids[1]}
        for ws in (mine, here, there):
            assert wait_for(ws, {"type": "read"})[-1] == want
        assert http.put(f"/api/rooms/{room}/read", json={"up_to": ids[0]}).status_code == 204
        assert http.put(f"/api/rooms/{room}/read", json={"up_to": ids[2]}).status_code == 204
        want = {"type": "read", "room": room, "up_to": ids[2]}
        for ws in (mine, here, there):
            assert wait_for(ws, {"type": "read"})[-1] == want
        # Amy's socket in the room heard none of bob's reads: her own read is her first.
        assert api(server, amy).put(f"/api/rooms/{room}/read", json={"up_to": ids[2]})
        seen = wait_for(amys, {"type": "read"})
        assert [f for f in seen if f["type"] == "read"] == [want]


def test_activity_reaches_the_sockets_not_looking_at_the_room(server: Server) -> None:
    """A message in a room the user is a member of reaches their `/ws/me` and their
    sockets of other rooms as `{"type": "activity", "room", "last_message_id", "unread",
    "mentions"}` with their counts; their socket of that room gets the message but no
    `activity` for it; a non-member gets none (the member's frames are the control)."""
    amy, bob, cat = server.register(), server.register(), server.register()
    room, other = server.create_room(amy), server.create_room(bob)
    join(server, bob, room)
    with (
        me(server, bob) as mine,
        me(server, cat) as cats,
        server.ws(f"/ws/rooms/{room}", bob) as here,
        server.ws(f"/ws/rooms/{other}", bob) as there,
    ):
        for ws in (here, there):
            welcome(ws)
        # Recorded at posting: bob can read the room.
        say(server, amy, room, f"@{bob.username} look")
        last = say(server, amy, room)
        want = {
            "type": "activity",
            "room": room,
            "last_message_id": last,
            "unread": 2,
            "mentions": 1,
        }
        for ws in (mine, there):
            activity = [f for f in wait_for(ws, want) if f["type"] == "activity"]
            assert activity[-1] == want
        heard = [f for _, f in frames_for(here, 1.5)]
        assert [f["id"] for f in heard if f["type"] == "message"][-1:] == [last]
        assert [f for f in heard if f["type"] == "activity"] == []
        assert [f for _, f in frames_for(cats, 0.5) if f["type"] == "activity"] == []


def test_activity_comes_at_most_once_a_second_per_room(server: Server) -> None:
    """A steady stream of messages (one every 50 ms for 3 s) gives each of the user's
    sockets at most one `activity` per second for the room, the first within about a second
    and the last one counting every message (the positive control: several arrive)."""
    amy, bob = server.register(), server.register()
    room = server.create_room(amy)
    join(server, bob, room)
    with me(server, bob) as mine, ThreadPoolExecutor(1) as pool:
        # Read as frames come, so that each one's time is when it arrived.
        listening = pool.submit(frames_for, mine, 5.0)
        started = time.monotonic()
        posted = []
        while time.monotonic() - started < 3.0:
            posted.append(say(server, amy, room))
            time.sleep(0.05)
        got = [
            (at, f) for at, f in listening.result() if f["type"] == "activity" and f["room"] == room
        ]
    times = [at for at, _ in got]
    assert 2 <= len(got) <= 5, got
    assert times[0] - started < 2.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Flushes are a second apart; their queries, and this machine, add some jitter.
    assert min(gaps) > 0.5, gaps
    assert got[-1][1]["last_message_id"] == posted[-1]
    assert got[-1][1]["unread"] == len(posted)


def test_activity_of_several_rooms_comes_in_one_flush(server: Server) -> None:
    """Rooms that had messages within the same second are told of in one flush: a message
    in one room, and 0.4 s later one in another, reach the user's `/ws/me` and their socket
    of a third room as two `activity` frames that arrive together, not 0.4 s apart (a
    flush per room would keep the gap); both arrive (the positive control)."""
    amy, bob = server.register(), server.register()
    first, second, third = (server.create_room(amy) for _ in range(3))
    for room in (first, second, third):
        join(server, bob, room)
    with (
        me(server, bob) as mine,
        server.ws(f"/ws/rooms/{third}", bob) as there,
        ThreadPoolExecutor(2) as pool,
    ):
        welcome(there)
        listening = [pool.submit(frames_for, ws, 3.0) for ws in (mine, there)]
        say(server, amy, first)
        time.sleep(0.4)
        say(server, amy, second)
        for heard in listening:
            got = {f["room"]: at for at, f in heard.result() if f["type"] == "activity"}
            assert set(got) == {first, second}, got
            assert abs(got[first] - got[second]) < 0.15, got


def test_membership_and_room_changes_reach_the_users_me_socket(server: Server) -> None:
    """`/ws/me` hears of the user's own memberships (`member` join and kick) and of rooms
    they can see as `room` frames: a private room they were added to (`added`), its topic
    (`changed`), a DM made with them and a new public room (`created`). Someone else's
    `/ws/me` hears of none of the private ones: the public room is the first it gets (the
    control)."""
    amy, bob, cat = server.register(), server.register(), server.register()
    http = api(server, amy)
    private = unique("room-")
    with me(server, bob) as mine, me(server, cat) as cats:
        assert http.post("/api/rooms", json={"name": private, "kind": "private"}).status_code == 201
        assert http.put(f"/api/rooms/{private}/members/{bob.username}").status_code == 204
        seen = wait_for(mine, {"type": "room", "room": private})
        assert {"type": "member", "room": private, "event": "join", "user": bob.username,
                "role": "member"} in seen  # fmt: skip
        assert seen[-1] == {
            "type": "room",
            "event": "added",
            "room": private,
            "kind": "private",
            "topic": "",
        }
        r = http.patch(f"/api/rooms/{private}", json={"topic": "plans"})
        assert r.status_code == 200, r.text
        assert wait_for(mine, {"type": "room", "event": "changed"})[-1]["topic"] == "plans"
        assert http.delete(f"/api/rooms/{private}/members/{bob.username}").status_code == 204
        wait_for(mine, {"type": "member", "event": "kick", "user": bob.username})
        r = http.post("/api/dms", json={"users": [bob.username]})
        assert r.status_code == 201, r.text
        dm = r.json()["name"]
        assert wait_for(mine, {"type": "room", "room": dm})[-1]["event"] == "created"
        public = server.create_room(amy)
        want = {"type": "room", "event": "created", "room": public, "kind": "public", "topic": ""}
        assert wait_for(mine, want)[-1] == want
        assert wait_for(cats, want) == [want]
