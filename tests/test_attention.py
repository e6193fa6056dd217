"""SPEC v2 "Attention" over REST: read markers (`PUT /api/rooms/{name}/read`) and the room
object's `unread` and `mentions`, against a real server on a real socket."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chat.attention import UNREAD_CAP
from tests.conftest import Account, Server, make_settings, run_sql, unique
from tests.test_rooms_api import api, assert_validation_error

OVERSIZED = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: its accounts post and change memberships quickly."""
    srv = Server(
        make_settings(
            tmp_path_factory.mktemp("attention"),
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


@dataclass(frozen=True)
class People:
    alice: Account
    bob: Account
    carol: Account


@pytest.fixture(scope="module")
def people(server: Server) -> People:
    return People(*(server.register(unique("a")) for _ in range(3)))


def say(server: Server, account: Account, room: str, body: str = "hi") -> int:
    r = api(server, account).post(f"/api/rooms/{room}/messages", json={"body": body})
    assert r.status_code == 201, r.text
    message_id: int = r.json()["id"]
    return message_id


def read(server: Server, account: Account, room: str, up_to: Any) -> httpx.Response:
    return api(server, account).put(f"/api/rooms/{room}/read", json={"up_to": up_to})


def badges(server: Server, account: Account, room: str) -> tuple[int, int]:
    """The room's (unread, mentions) for `account`, as the room object and the list say."""
    http = api(server, account)
    r = http.get(f"/api/rooms/{room}")
    assert r.status_code == 200, r.text
    one = (r.json()["unread"], r.json()["mentions"])
    listed = [x for x in _all_rooms(http) if x["name"] == room]
    if listed:
        assert (listed[0]["unread"], listed[0]["mentions"]) == one
    return one


def _all_rooms(http: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    url: str | None = "/api/rooms?limit=500"
    while url is not None:
        r = http.get(url)
        assert r.status_code == 200, r.text
        found += r.json()
        url = r.links.get("next", {}).get("url")
    return found


def join(server: Server, account: Account, room: str) -> None:
    r = api(server, account).put(f"/api/rooms/{room}/members/{account.username}")
    assert r.status_code == 204, r.text


def room_id_sql(room: str) -> str:
    return f"(SELECT id FROM rooms WHERE name = '{room}')"


def test_unread_counts_from_the_marker_which_never_moves_back(
    server: Server, people: People
) -> None:
    """`unread` is the caller's messages after their read marker, not their own; `PUT
    .../read {up_to}` answers 204 and moves the marker, never backwards (a lower value is
    a 204 that changes nothing); the author has nothing unread; a non-member gets 0."""
    alice, bob, carol = people.alice, people.bob, people.carol
    room = server.create_room(alice)
    join(server, bob, room)
    ids = [say(server, alice, room, f"m{i}") for i in range(3)]
    assert badges(server, bob, room) == (3, 0)
    say(server, bob, room, "my own")
    assert badges(server, bob, room) == (3, 0)
    assert badges(server, alice, room) == (1, 0)  # bob's message

    r = read(server, bob, room, ids[1])
    assert r.status_code == 204 and r.content == b""
    assert badges(server, bob, room) == (1, 0)
    assert read(server, bob, room, ids[0]).status_code == 204
    assert badges(server, bob, room) == (1, 0), "the marker moved back"
    assert read(server, bob, room, ids[2]).status_code == 204
    assert badges(server, bob, room) == (0, 0)
    # Carol never joined: she may read the public room, and has no badges in it.
    assert read(server, carol, room, ids[2]).status_code == 204
    assert badges(server, carol, room) == (0, 0)
    # The positive control for carol: once a member, new messages count for her.
    join(server, carol, room)
    say(server, alice, room)
    assert badges(server, carol, room) == (1, 0)


def test_a_marker_beyond_the_newest_message_is_clamped(server: Server, people: People) -> None:
    """`up_to` past the room's newest message is accepted (204) and clamped to it: a message
    posted afterwards still counts as unread."""
    alice, bob = people.alice, people.bob
    room = server.create_room(alice)
    join(server, bob, room)
    say(server, alice, room)
    assert badges(server, bob, room) == (1, 0)
    assert read(server, bob, room, 10**12).status_code == 204
    assert badges(server, bob, room) == (0, 0)
    say(server, alice, room)
    say(server, alice, room)
    assert badges(server, bob, room) == (2, 0)


def test_joining_starts_with_what_is_there_read(server: Server, people: People) -> None:
    """A member's marker starts at the room's newest message when they join (also when they
    join again after leaving): earlier messages are not unread; later ones are."""
    alice, bob = people.alice, people.bob
    room = server.create_room(alice)
    for i in range(4):
        say(server, alice, room, f"before {i}")
    join(server, bob, room)
    assert badges(server, bob, room) == (0, 0)
    say(server, alice, room)
    assert badges(server, bob, room) == (1, 0)
    r = api(server, bob).delete(f"/api/rooms/{room}/members/{bob.username}")
    assert r.status_code == 204
    say(server, alice, room)
    join(server, bob, room)
    assert badges(server, bob, room) == (0, 0)


def test_a_new_room_and_a_dm_start_with_nothing_unread(server: Server, people: People) -> None:
    """A room's creator and a DM's members have nothing unread at first; a DM's message
    counts for the other member."""
    alice, bob = people.alice, people.bob
    room = server.create_room(alice)
    assert badges(server, alice, room) == (0, 0)
    r = api(server, alice).post("/api/dms", json={"users": [bob.username]})
    assert r.status_code in (200, 201), r.text
    dm = r.json()["name"]
    read(server, bob, dm, 10**12)
    assert badges(server, bob, dm)[0] == 0
    say(server, alice, dm)
    assert badges(server, bob, dm)[0] == 1
    assert badges(server, alice, dm)[0] == 0


def test_mentions_count_after_the_marker(server: Server, people: People) -> None:
    """`mentions` counts the caller's mentions after their read marker (recorded at posting
    for `@username` of someone who can read the room)."""
    alice, bob = people.alice, people.bob
    room = server.create_room(alice)
    join(server, bob, room)
    bodies = ["no mention", f"@{bob.username} one", f"hi @{bob.username}"]
    ids = [say(server, alice, room, body) for body in bodies]
    assert badges(server, bob, room) == (3, 2)
    assert badges(server, alice, room) == (0, 0)
    assert read(server, bob, room, ids[1]).status_code == 204
    assert badges(server, bob, room) == (1, 1)
    assert read(server, bob, room, ids[2]).status_code == 204
    assert badges(server, bob, room) == (0, 0)


def _bulk_copies(server: Server, room: str, first: int, count: int, deleted: bool) -> str:
    """SQL copying message `first` of the room `count` times after the room's last seq."""
    flag = "true" if deleted else "false"
    if server.settings.database_url:
        numbers = f"generate_series(1, {count}) AS n(i)"
        prefix = ""
    else:
        numbers = "n"
        prefix = (
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) "
        )
    return (
        f"{prefix}INSERT INTO messages (room_id, seq, user_id, body, nonce, ts, deleted) "
        f"SELECT m.room_id, r.last_seq + n.i, m.user_id, m.body, NULL, m.ts, {flag} "
        f"FROM messages AS m JOIN rooms AS r ON r.id = m.room_id, {numbers} "
        f"WHERE m.room_id = {room_id_sql(room)} AND m.seq = {first}"
    )


def _grow(server: Server, room: str, first: int, count: int, deleted: bool = False) -> None:
    run_sql(server, _bulk_copies(server, room, first, count, deleted))
    run_sql(
        server,
        f"UPDATE rooms SET last_seq = (SELECT max(seq) FROM messages WHERE room_id = rooms.id) "
        f"WHERE name = '{room}'",
    )


def test_unread_is_bounded_and_skips_deleted_messages(server: Server, people: People) -> None:
    """`unread` counts no further than its cap (UNREAD_CAP), and deleted messages are not
    unread (deletions simulated in SQL as the lifecycle stores them)."""
    alice, bob = people.alice, people.bob
    room = server.create_room(alice)
    join(server, bob, room)
    first = say(server, alice, room)
    _grow(server, room, first, 5, deleted=True)
    assert badges(server, bob, room) == (1, 0)
    _grow(server, room, first, 10)
    assert badges(server, bob, room) == (11, 0)
    _grow(server, room, first, UNREAD_CAP + 500)
    assert badges(server, bob, room) == (UNREAD_CAP, 0)


def test_own_messages_are_passed_over_up_to_the_cap(server: Server, people: People) -> None:
    """The reader's own messages among the others' are never unread: in a room where the
    others' messages reach the cap only after hundreds of the reader's, and in one where
    counting the reader's would reach it; each room of a page from its own marker."""
    alice, bob = people.alice, people.bob
    capped, exact, marked = (server.create_room(alice) for _ in range(3))
    firsts = {}
    for room in (capped, exact, marked):
        join(server, bob, room)
        firsts[room] = (say(server, alice, room), say(server, bob, room))
    _grow(server, capped, firsts[capped][1], 400)
    _grow(server, capped, firsts[capped][0], UNREAD_CAP + 200)
    _grow(server, exact, firsts[exact][1], 600)
    _grow(server, exact, firsts[exact][0], 500)
    _grow(server, exact, firsts[exact][0], 100, deleted=True)
    _grow(server, marked, firsts[marked][0], 50)
    assert read(server, bob, marked, firsts[marked][1] + 20).status_code == 204
    assert badges(server, bob, capped) == (UNREAD_CAP, 0)
    assert badges(server, bob, exact) == (501, 0)
    assert badges(server, bob, marked) == (30, 0)
    # For their creator (marker at 0) it is bob's messages that are unread, not hers.
    assert badges(server, alice, capped) == (401, 0)
    assert badges(server, alice, exact) == (601, 0)


def test_the_read_marker_refuses_bad_input(server: Server, people: People) -> None:
    """Malformed JSON, a missing, negative, non-integer or over-64-bit `up_to`, extra keys
    → 422; an oversized body → 413; no token → 401; a cookie sign-in without the CSRF
    header → 403; a missing room → 404. The same body goes through with a token (the
    positive control)."""
    alice = people.alice
    room = server.create_room(alice)
    http = api(server, alice)
    path = f"/api/rooms/{room}/read"
    for body in ({}, {"up_to": -1}, {"up_to": "3"}, {"up_to": 1.5}, {"up_to": 2**63}):
        assert_validation_error(http.put(path, json=body))
    assert_validation_error(http.put(path, json={"up_to": 0, "extra": 1}))
    assert_validation_error(
        http.put(path, content=b"{not json", headers={"Content-Type": "application/json"})
    )
    r = http.put(path, content=b'{"up_to": 0, "x": "' + b"a" * OVERSIZED + b'"}')
    assert r.status_code == 413, r.text
    assert api(server).put(path, json={"up_to": 0}).status_code == 401
    csrf = "t" * 43
    cookies = server.client(cookies={"access_token": alice.token, "csrf_token": csrf})
    assert cookies.put(path, json={"up_to": 0}).status_code == 403
    assert cookies.put(path, json={"up_to": 0}, headers={"X-CSRF-Token": csrf}).status_code == 204
    assert http.put(f"/api/rooms/{unique('room-')}/read", json={"up_to": 0}).status_code == 404
    assert http.put(path, json={"up_to": 0}).status_code == 204


def test_private_rooms_and_bans(server: Server, people: People) -> None:
    """Read access decides: a private room's non-member gets 404 as for a missing room (so
    does one banned from it, no longer a member); one banned from a public room 403; the
    private room's member 204."""
    alice, bob, carol = people.alice, people.bob, people.carol
    http = api(server, alice)
    private = unique("room-")
    assert http.post("/api/rooms", json={"name": private, "kind": "private"}).status_code == 201
    assert http.put(f"/api/rooms/{private}/members/{bob.username}").status_code == 204
    missing = read(server, carol, unique("room-"), 0)
    hidden = read(server, carol, private, 0)
    assert (hidden.status_code, hidden.json()) == (missing.status_code, missing.json())
    assert hidden.status_code == 404
    assert read(server, bob, private, 0).status_code == 204
    assert http.put(f"/api/rooms/{private}/bans/{bob.username}").status_code == 204
    assert read(server, bob, private, 0).status_code == 404
    public = server.create_room(alice)
    assert read(server, bob, public, 0).status_code == 204
    assert http.put(f"/api/rooms/{public}/bans/{bob.username}").status_code == 204
    assert read(server, bob, public, 0).status_code == 403
