"""SPEC v2 "Conversations" over REST: the room object, room kinds, membership, roles, bans
and DMs, against a real server (the session's shared one) on a real socket."""

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Account, Server, make_settings, unique
from tests.test_rooms_api import ROOM_KEYS, api, assert_validation_error, room_names
from tests.test_security import browser, sign_in

CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# Over the app's body limit (CHAT_HTTP_MAX_BODY_BYTES, 64 KiB by default) and the 1 MiB the
# document names.
OVERSIZED = 2 * 1024 * 1024


@dataclass(frozen=True)
class Crowd:
    """Accounts shared by the module's tests (each registration costs two Argon2 runs);
    every test makes rooms of its own, so roles and bans never leak between tests."""

    owner: Account
    moderator: Account
    member: Account
    outsider: Account
    # More people, for DMs of up to nine.
    others: tuple[Account, ...]

    @property
    def everyone(self) -> list[Account]:
        return [self.owner, self.moderator, self.member, self.outsider, *self.others]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default server (SQLite unless the suite runs on PostgreSQL), of this module's
    own: its accounts change memberships far past the per-account rate
    (test_membership_limits.py tests that limit)."""
    srv = Server(make_settings(tmp_path_factory.mktemp("conversations"), membership_burst=10**6))
    srv.start()
    try:
        srv.admin = srv.register(unique("admin"))
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def crowd(server: Server) -> Crowd:
    accounts = [server.register(unique("c")) for _ in range(10)]
    owner, moderator, member, outsider, *others = accounts
    return Crowd(owner, moderator, member, outsider, tuple(others))


@pytest.fixture(scope="module")
def admin(server: Server) -> Account:
    assert server.admin is not None and server.admin.is_admin
    return server.admin


def new_room(
    server: Server,
    crowd: Crowd,
    kind: str = "public",
    *,
    moderator: bool = True,
    member: bool = True,
) -> str:
    """A room owned by `crowd.owner`, with `crowd.moderator` as a moderator and
    `crowd.member` as a member (each unless told otherwise); `crowd.outsider` stays out."""
    name = unique("conv-")
    owner = api(server, crowd.owner)
    r = owner.post("/api/rooms", json={"name": name, "kind": kind})
    assert r.status_code == 201, r.text
    if moderator:
        add(owner, name, crowd.moderator)
        r = owner.patch(members_path(name, crowd.moderator), json={"role": "moderator"})
        assert r.status_code == 204, r.text
    if member:
        add(owner, name, crowd.member)
    return name


def members_path(room: str, account: Account | str | None = None) -> str:
    if account is None:
        return f"/api/rooms/{room}/members"
    username = account if isinstance(account, str) else account.username
    return f"/api/rooms/{room}/members/{username}"


def bans_path(room: str, account: Account | str | None = None) -> str:
    if account is None:
        return f"/api/rooms/{room}/bans"
    username = account if isinstance(account, str) else account.username
    return f"/api/rooms/{room}/bans/{username}"


def messages_path(room: str) -> str:
    return f"/api/rooms/{room}/messages"


def add(http: httpx.Client, room: str, account: Account) -> None:
    r = http.put(members_path(room, account))
    assert r.status_code == 204, r.text


def members(http: httpx.Client, room: str) -> dict[str, str]:
    r = http.get(members_path(room))
    assert r.status_code == 200, r.text
    return {m["username"]: m["role"] for m in r.json()}


def room_of(http: httpx.Client, room: str) -> dict[str, Any]:
    r = http.get(f"/api/rooms/{room}")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def all_rooms(http: httpx.Client) -> dict[str, dict[str, Any]]:
    """The caller's room list, every page of it, by name."""
    rooms: dict[str, dict[str, Any]] = {}
    url: str | None = "/api/rooms"
    while url is not None:
        r = http.get(url)
        assert r.status_code == 200, r.text
        rooms.update((room["name"], room) for room in r.json())
        url = r.links.get("next", {}).get("url")
    return rooms


def open_dm(http: httpx.Client, *usernames: str) -> httpx.Response:
    return http.post("/api/dms", json={"users": list(usernames)})


# --- the room object ----------------------------------------------------------------------


def test_created_room_is_the_room_object(server: Server, crowd: Crowd) -> None:
    """`POST /api/rooms {name, kind, topic}` → 201 with the room object: its kind and topic,
    the creator its `owner`, a member, the only one; `GET /api/rooms/{name}` gives the same."""
    http = api(server, crowd.owner)
    name = unique("obj-")
    r = http.post("/api/rooms", json={"name": name, "kind": "private", "topic": "  plans  "})
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == ROOM_KEYS
    assert created["name"] == name
    assert created["kind"] == "private"
    assert created["topic"] == "plans"
    assert created["role"] == "owner"
    assert created["is_member"] is True
    assert created["member_count"] == 1
    assert created["last_message_id"] == 0
    assert (created["unread"], created["mentions"]) == (0, 0)
    fetched = room_of(http, name)
    assert {k: v for k, v in fetched.items() if k != "active_users"} == {
        k: v for k, v in created.items() if k != "active_users"
    }

    plain = http.post("/api/rooms", json={"name": unique("obj-")})
    assert plain.status_code == 201, plain.text
    assert (plain.json()["kind"], plain.json()["topic"]) == ("public", "")


def test_last_message_id_grows_with_posts(server: Server, crowd: Crowd) -> None:
    """The room object's `last_message_id` is 0 until a message is posted, then the newest
    message's id."""
    http = api(server, crowd.owner)
    room = new_room(server, crowd, moderator=False, member=False)
    assert room_of(http, room)["last_message_id"] == 0
    first = http.post(messages_path(room), json={"body": "one"})
    assert first.status_code == 201, first.text
    assert room_of(http, room)["last_message_id"] == first.json()["id"]
    second = http.post(messages_path(room), json={"body": "two"})
    assert second.status_code == 201, second.text
    assert second.json()["id"] > first.json()["id"]
    assert room_of(http, room)["last_message_id"] == second.json()["id"]


def test_room_object_is_the_callers_view(server: Server, crowd: Crowd) -> None:
    """`is_member`, `role` and `member_count` are the caller's view: null role and not a member
    before joining a public room, `member` after, and the count follows."""
    room = new_room(server, crowd, moderator=False, member=False)
    http = api(server, crowd.outsider)
    before = room_of(http, room)
    assert (before["is_member"], before["role"], before["member_count"]) == (False, None, 1)
    add(http, room, crowd.outsider)
    after = room_of(http, room)
    assert (after["is_member"], after["role"], after["member_count"]) == (True, "member", 2)
    assert room_of(api(server, crowd.owner), room)["role"] == "owner"


def test_room_list_shows_public_rooms_and_the_callers_own(
    server: Server, crowd: Crowd, admin: Account
) -> None:
    """`GET /api/rooms` lists the public rooms and every room the caller is a member of
    (private rooms, DMs), never another's private room or DM; each as the room object."""
    public = new_room(server, crowd, "public", moderator=False, member=False)
    private = new_room(server, crowd, "private", moderator=False)
    r = open_dm(api(server, crowd.member), crowd.moderator.username)
    assert r.status_code in (200, 201), r.text
    dm = r.json()["name"]

    member_sees = room_names(api(server, crowd.member))
    assert {public, private, dm} <= set(member_sees)
    assert member_sees == sorted(member_sees)
    outsider_sees = set(room_names(api(server, crowd.outsider)))
    assert public in outsider_sees
    assert private not in outsider_sees and dm not in outsider_sees
    # Admins may open the private room, but it is not theirs to list; the DM is not theirs
    # at all.
    admin_sees = set(room_names(api(server, admin)))
    assert public in admin_sees
    assert private not in admin_sees and dm not in admin_sees

    listed = all_rooms(api(server, crowd.member))
    assert all(set(room) == ROOM_KEYS for room in listed.values())
    assert (listed[private]["role"], listed[private]["kind"]) == ("member", "private")
    assert (listed[dm]["role"], listed[dm]["kind"], listed[dm]["member_count"]) == (
        "member",
        "dm",
        2,
    )
    assert (listed[public]["is_member"], listed[public]["role"]) == (False, None)


# --- kinds ----------------------------------------------------------------------------------


def probes(room: str, someone: str) -> list[tuple[str, str, Any]]:
    """Every request about a room that a caller might make, with a body where one is needed."""
    return [
        ("GET", f"/api/rooms/{room}", None),
        ("PATCH", f"/api/rooms/{room}", {"topic": "t"}),
        ("GET", messages_path(room), None),
        ("POST", messages_path(room), {"body": "hello?"}),
        ("GET", members_path(room), None),
        ("PUT", members_path(room, "SELF"), None),
        ("DELETE", members_path(room, "SELF"), None),
        ("PUT", members_path(room, someone), None),
        ("DELETE", members_path(room, someone), None),
        ("PATCH", members_path(room, someone), {"role": "moderator"}),
        ("GET", bans_path(room), None),
        ("PUT", bans_path(room, someone), None),
        ("DELETE", bans_path(room, someone), None),
    ]


def answers(
    http: httpx.Client, caller: Account, room: str, someone: str
) -> list[tuple[str, int, Any]]:
    found = []
    for method, path, body in probes(room, someone):
        path = path.replace("/SELF", "/" + caller.username)
        r = http.request(method, path, json=body)
        body_seen = r.json() if r.content else None
        found.append((f"{method} {path.replace(room, '{room}')}", r.status_code, body_seen))
    return found


@pytest.mark.parametrize("kind", ["private", "dm"])
def test_hidden_room_is_indistinguishable_from_none(
    server: Server, crowd: Crowd, kind: str
) -> None:
    """A private room or a DM is invisible to non-members: every request about it (the room,
    its messages, members, joining, bans, roles) gets exactly the 404 and the body a room
    that does not exist gives, and leaves it unchanged. Its members see it."""
    if kind == "private":
        room = new_room(server, crowd, "private")
    else:
        r = open_dm(api(server, crowd.owner), crowd.member.username, crowd.moderator.username)
        assert r.status_code in (200, 201), r.text
        room = r.json()["name"]
    nowhere = unique("nowhere-")
    http = api(server, crowd.outsider)
    seen = answers(http, crowd.outsider, room, crowd.member.username)
    assert seen == answers(http, crowd.outsider, nowhere, crowd.member.username)
    assert {status for _, status, _ in seen} == {404}
    # Positive control: a member reads it, and nothing the outsider tried changed it.
    member = api(server, crowd.member)
    assert room_of(member, room)["name"] == room
    assert member.get(messages_path(room)).json()["messages"] == []
    assert crowd.outsider.username not in members(member, room)
    assert crowd.member.username in members(member, room)


def test_public_room_is_open_to_everyone(server: Server, crowd: Crowd) -> None:
    """Anyone may read a public room and post in it; posting makes the poster a member."""
    room = new_room(server, crowd, "public", moderator=False, member=False)
    http = api(server, crowd.outsider)
    assert room_of(http, room)["is_member"] is False
    assert http.get(messages_path(room)).status_code == 200
    assert crowd.outsider.username not in members(http, room)
    r = http.post(messages_path(room), json={"body": "hi all"})
    assert r.status_code == 201, r.text
    assert [m["body"] for m in http.get(messages_path(room)).json()["messages"]] == ["hi all"]
    assert members(http, room)[crowd.outsider.username] == "member"
    assert room_of(http, room)["is_member"] is True


# --- membership ----------------------------------------------------------------------------


def test_join_and_leave_a_public_room(server: Server, crowd: Crowd) -> None:
    """Joining a public room yourself (`PUT .../members/{you}`) → 204, also again; leaving
    (`DELETE`) → 204, also again; the member list follows."""
    room = new_room(server, crowd, "public", moderator=False, member=False)
    http = api(server, crowd.outsider)
    for _ in range(2):
        assert http.put(members_path(room, crowd.outsider)).status_code == 204
        assert members(http, room) == {
            crowd.owner.username: "owner",
            crowd.outsider.username: "member",
        }
    for _ in range(2):
        assert http.delete(members_path(room, crowd.outsider)).status_code == 204
        assert members(http, room) == {crowd.owner.username: "owner"}


def test_adding_someone_to_a_private_room(server: Server, crowd: Crowd) -> None:
    """In a private room the owner and moderators add people (204); a plain member may not
    (403), and the one they tried to add still cannot see the room."""
    room = new_room(server, crowd, "private")
    newcomer, later = crowd.others[0], crowd.others[1]
    r = api(server, crowd.member).put(members_path(room, newcomer))
    assert r.status_code == 403, r.text
    assert api(server, newcomer).get(f"/api/rooms/{room}").status_code == 404
    assert api(server, crowd.owner).put(members_path(room, newcomer)).status_code == 204
    assert room_of(api(server, newcomer), room)["role"] == "member"
    assert api(server, crowd.moderator).put(members_path(room, later)).status_code == 204
    assert members(api(server, later), room)[later.username] == "member"
    # Adding a member again changes nothing.
    assert api(server, crowd.owner).put(members_path(room, later)).status_code == 204
    assert members(api(server, crowd.owner), room) == {
        crowd.owner.username: "owner",
        crowd.moderator.username: "moderator",
        crowd.member.username: "member",
        newcomer.username: "member",
        later.username: "member",
    }


def test_leaving_a_private_room_hides_it(server: Server, crowd: Crowd) -> None:
    """A member who leaves a private room (204) no longer sees it: 404."""
    room = new_room(server, crowd, "private", moderator=False)
    http = api(server, crowd.member)
    assert http.get(messages_path(room)).status_code == 200
    assert http.delete(members_path(room, crowd.member)).status_code == 204
    assert http.get(messages_path(room)).status_code == 404
    assert http.get(f"/api/rooms/{room}").status_code == 404


@pytest.mark.parametrize("kind", ["public", "private"])
def test_kicks(server: Server, crowd: Crowd, kind: str) -> None:
    """Moderators remove members (204) but not owners or other moderators (403); a plain
    member removes nobody (403); owners remove anyone; removing a non-member → 404. A kicked
    user of a private room gets 404 afterwards."""
    room = new_room(server, crowd, kind)
    owner, moderator = api(server, crowd.owner), api(server, crowd.moderator)
    second_mod, victim = crowd.others[0], crowd.others[1]
    add(owner, room, second_mod)
    add(owner, room, victim)
    r = owner.patch(members_path(room, second_mod), json={"role": "moderator"})
    assert r.status_code == 204, r.text

    assert api(server, crowd.member).delete(members_path(room, victim)).status_code == 403
    assert moderator.delete(members_path(room, crowd.owner)).status_code == 403
    assert moderator.delete(members_path(room, second_mod)).status_code == 403
    assert moderator.delete(members_path(room, crowd.outsider)).status_code == 404
    assert set(members(owner, room)) == {
        crowd.owner.username,
        crowd.moderator.username,
        crowd.member.username,
        second_mod.username,
        victim.username,
    }

    assert moderator.delete(members_path(room, victim)).status_code == 204
    assert owner.delete(members_path(room, second_mod)).status_code == 204
    assert owner.delete(members_path(room, crowd.moderator)).status_code == 204
    assert set(members(owner, room)) == {crowd.owner.username, crowd.member.username}
    kicked = api(server, victim).get(messages_path(room)).status_code
    assert kicked == (404 if kind == "private" else 200)


def test_member_list_is_sorted(server: Server, crowd: Crowd) -> None:
    """`GET /api/rooms/{name}/members` → `[{username, role}]`, in username order."""
    room = new_room(server, crowd, "public")
    owner = api(server, crowd.owner)
    for account in crowd.others[:4]:
        add(api(server, account), room, account)
    r = owner.get(members_path(room))
    assert r.status_code == 200, r.text
    listed = r.json()
    assert all(set(m) == {"username", "role"} for m in listed)
    names = [m["username"] for m in listed]
    assert names == sorted(names, key=str.lower)
    assert len(names) == 7
    assert {m["username"]: m["role"] for m in listed}[crowd.moderator.username] == "moderator"


# --- roles ---------------------------------------------------------------------------------


def test_only_owners_change_roles(server: Server, crowd: Crowd) -> None:
    """`PATCH .../members/{username} {role}` is for owners (204); a moderator or member gets
    403; an unknown role is 422; a non-member or an unknown user 404."""
    room = new_room(server, crowd, "public")
    owner = api(server, crowd.owner)
    target = crowd.member
    for caller in (crowd.moderator, crowd.member):
        r = api(server, caller).patch(members_path(room, target), json={"role": "moderator"})
        assert r.status_code == 403, r.text
    assert members(owner, room)[target.username] == "member"
    assert_validation_error(owner.patch(members_path(room, target), json={"role": "admin"}))
    assert_validation_error(owner.patch(members_path(room, target), json={"role": None}))
    r = owner.patch(members_path(room, crowd.outsider), json={"role": "moderator"})
    assert r.status_code == 404, r.text
    r = owner.patch(members_path(room, unique("ghost")), json={"role": "moderator"})
    assert r.status_code == 404, r.text
    assert crowd.outsider.username not in members(owner, room)

    for role in ("moderator", "owner", "member"):
        r = owner.patch(members_path(room, target), json={"role": role})
        assert r.status_code == 204, r.text
        assert members(owner, room)[target.username] == role
        assert room_of(api(server, target), room)["role"] == role


def test_a_room_keeps_an_owner(server: Server, crowd: Crowd) -> None:
    """The sole owner of a room with other members may neither demote themself nor leave
    (409); once someone else is an owner, they may (204)."""
    room = new_room(server, crowd, "private", moderator=False)
    owner = api(server, crowd.owner)
    r = owner.patch(members_path(room, crowd.owner), json={"role": "member"})
    assert r.status_code == 409, r.text
    assert owner.delete(members_path(room, crowd.owner)).status_code == 409
    assert members(owner, room)[crowd.owner.username] == "owner"

    r = owner.patch(members_path(room, crowd.member), json={"role": "owner"})
    assert r.status_code == 204, r.text
    r = owner.patch(members_path(room, crowd.owner), json={"role": "moderator"})
    assert r.status_code == 204, r.text
    # Now the other is the sole owner, and the same rule holds them.
    new_owner = api(server, crowd.member)
    assert new_owner.delete(members_path(room, crowd.member)).status_code == 409
    assert owner.delete(members_path(room, crowd.owner)).status_code == 204
    assert members(new_owner, room) == {crowd.member.username: "owner"}


# --- bans ----------------------------------------------------------------------------------


def test_ban_shuts_someone_out_until_lifted(server: Server, crowd: Crowd) -> None:
    """`PUT .../bans/{username}` → 204: the user is no longer a member and may not read,
    post or join the public room (403), nor be added; `GET .../bans` lists them; after
    `DELETE` they may again."""
    room = new_room(server, crowd, "public")
    owner = api(server, crowd.owner)
    banned = api(server, crowd.member)
    assert banned.post(messages_path(room), json={"body": "before"}).status_code == 201

    assert api(server, crowd.moderator).put(bans_path(room, crowd.member)).status_code == 204
    assert crowd.member.username not in members(owner, room)
    assert owner.get(bans_path(room)).json() == [{"username": crowd.member.username}]
    assert banned.get(messages_path(room)).status_code == 403
    assert banned.post(messages_path(room), json={"body": "during"}).status_code == 403
    assert banned.put(members_path(room, crowd.member)).status_code == 403
    assert owner.put(members_path(room, crowd.member)).status_code == 403
    assert crowd.member.username not in members(owner, room)
    # Banning again changes nothing.
    assert owner.put(bans_path(room, crowd.member)).status_code == 204
    assert owner.get(bans_path(room)).json() == [{"username": crowd.member.username}]

    assert owner.delete(bans_path(room, crowd.member)).status_code == 204
    assert owner.get(bans_path(room)).json() == []
    assert banned.get(messages_path(room)).status_code == 200
    assert banned.post(messages_path(room), json={"body": "after"}).status_code == 201
    assert banned.put(members_path(room, crowd.member)).status_code == 204
    bodies = [m["body"] for m in owner.get(messages_path(room)).json()["messages"]]
    assert bodies == ["before", "after"]


def test_banning_a_private_room_member_hides_the_room(server: Server, crowd: Crowd) -> None:
    """A member banned from a private room is removed with it: the room is then as unknown
    to them as one that does not exist (the same 404s), and their tries change nothing."""
    room = new_room(server, crowd, "private")
    banned = api(server, crowd.member)
    assert banned.get(messages_path(room)).status_code == 200
    assert api(server, crowd.owner).put(bans_path(room, crowd.member)).status_code == 204
    seen = answers(banned, crowd.member, room, crowd.moderator.username)
    assert seen == answers(banned, crowd.member, unique("nowhere-"), crowd.moderator.username)
    assert {status for _, status, _ in seen} == {404}
    assert members(api(server, crowd.owner), room) == {
        crowd.owner.username: "owner",
        crowd.moderator.username: "moderator",
    }


def test_who_may_ban(server: Server, crowd: Crowd) -> None:
    """Plain members may neither ban nor see the bans (403); moderators may not ban owners or
    other moderators (403); owners may ban moderators; nobody bans themself (403)."""
    room = new_room(server, crowd, "public")
    owner, moderator = api(server, crowd.owner), api(server, crowd.moderator)
    member = api(server, crowd.member)
    second_mod = crowd.others[0]
    add(owner, room, second_mod)
    r = owner.patch(members_path(room, second_mod), json={"role": "moderator"})
    assert r.status_code == 204, r.text

    assert member.put(bans_path(room, crowd.outsider)).status_code == 403
    assert member.get(bans_path(room)).status_code == 403
    assert moderator.put(bans_path(room, crowd.owner)).status_code == 403
    assert moderator.put(bans_path(room, second_mod)).status_code == 403
    assert moderator.put(bans_path(room, crowd.moderator)).status_code == 403
    assert owner.put(bans_path(room, crowd.owner)).status_code == 403
    assert owner.get(bans_path(room)).json() == []
    assert len(members(owner, room)) == 4

    # Outsiders may be banned before they ever come.
    assert moderator.put(bans_path(room, crowd.outsider)).status_code == 204
    assert owner.put(bans_path(room, second_mod)).status_code == 204
    assert [b["username"] for b in owner.get(bans_path(room)).json()] == sorted(
        [crowd.outsider.username, second_mod.username], key=str.lower
    )
    assert api(server, crowd.outsider).put(members_path(room, crowd.outsider)).status_code == 403


def test_admins_act_as_owners_but_not_in_dms(server: Server, crowd: Crowd, admin: Account) -> None:
    """Site admins may do what an owner may in a private room they are not in (read it, set
    roles, kick, ban, see the bans), but a DM they are not in is unknown to them (404)."""
    room = new_room(server, crowd, "private")
    http = api(server, admin)
    assert room_of(http, room)["role"] is None
    assert http.get(messages_path(room)).status_code == 200
    assert http.get(members_path(room)).status_code == 200
    r = http.patch(members_path(room, crowd.member), json={"role": "moderator"})
    assert r.status_code == 204, r.text
    assert http.delete(members_path(room, crowd.owner)).status_code == 409  # The sole owner.
    assert http.delete(members_path(room, crowd.moderator)).status_code == 204
    assert http.put(bans_path(room, crowd.member)).status_code == 204
    assert http.get(bans_path(room)).json() == [{"username": crowd.member.username}]
    assert members(http, room) == {crowd.owner.username: "owner"}

    r = open_dm(api(server, crowd.owner), crowd.outsider.username)
    assert r.status_code in (200, 201), r.text
    dm = r.json()["name"]
    assert api(server, crowd.outsider).get(messages_path(dm)).status_code == 200
    for path in (f"/api/rooms/{dm}", messages_path(dm), members_path(dm), bans_path(dm)):
        assert http.get(path).status_code == 404, path
    assert http.put(bans_path(dm, crowd.outsider)).status_code == 404
    assert http.put(members_path(dm, admin)).status_code == 404
    assert admin.username not in members(api(server, crowd.owner), dm)


# --- DMs -----------------------------------------------------------------------------------


def test_dm_is_made_once_per_set_of_people(server: Server) -> None:
    """`POST /api/dms {users}` → 201 a `dm` room named `dm-…` with the caller and the others
    as members; the same set again, from any of them, in any order or case → 200, the same
    room. Another set is another room."""
    alice, bob, carol = (server.register(unique("dm")) for _ in range(3))
    r = open_dm(api(server, alice), bob.username, carol.username)
    assert r.status_code == 201, r.text
    dm = r.json()
    assert set(dm) == ROOM_KEYS
    assert dm["name"].startswith("dm-")
    assert (dm["kind"], dm["is_member"], dm["member_count"]) == ("dm", True, 3)
    assert set(members(api(server, bob), dm["name"])) == {
        alice.username,
        bob.username,
        carol.username,
    }
    again = [
        (alice, [carol.username.upper(), bob.username]),
        (bob, [alice.username, carol.username]),
        (carol, [bob.username.upper(), alice.username.lower(), bob.username]),
        # The caller named among the others changes nothing.
        (alice, [alice.username, bob.username, carol.username]),
    ]
    for caller, users in again:
        r = open_dm(api(server, caller), *users)
        assert r.status_code == 200, r.text
        assert r.json()["name"] == dm["name"]
    pair = open_dm(api(server, alice), bob.username)
    assert pair.status_code == 201, pair.text
    assert pair.json()["name"] != dm["name"]
    assert pair.json()["member_count"] == 2


def test_dm_size_and_people(server: Server, crowd: Crowd) -> None:
    """A DM is the caller and 1-8 others: no one (or only the caller) → 422, nine → 422, eight
    → 201; an unknown user → 404 and nothing made."""
    http = api(server, crowd.owner)
    assert_validation_error(open_dm(http))
    assert_validation_error(open_dm(http, crowd.owner.username))
    assert_validation_error(open_dm(http, crowd.owner.username.upper(), crowd.owner.username))
    nine = [a.username for a in crowd.everyone[1:]]
    assert len(nine) == 9
    assert_validation_error(open_dm(http, *nine))

    def dms_of_member() -> set[str]:
        return {n for n in room_names(api(server, crowd.member)) if n.startswith("dm-")}

    before = dms_of_member()
    r = open_dm(http, crowd.member.username, unique("ghost"))
    assert r.status_code == 404, r.text
    assert dms_of_member() == before
    r = open_dm(http, *nine[:8])
    assert r.status_code == 201, r.text
    assert r.json()["member_count"] == 9
    assert dms_of_member() == before | {r.json()["name"]}


def test_dm_has_fixed_members_and_no_moderation(server: Server) -> None:
    """In a DM its members read and post; nobody may leave, add, kick, ban, list bans or
    change roles (403), and a third person gets 404 for all of it."""
    alice, bob, eve = (server.register(unique("dm")) for _ in range(3))
    r = open_dm(api(server, alice), bob.username)
    assert r.status_code == 201, r.text
    dm = r.json()["name"]
    http = api(server, alice)
    assert http.post(messages_path(dm), json={"body": "psst"}).status_code == 201
    assert [m["body"] for m in api(server, bob).get(messages_path(dm)).json()["messages"]] == [
        "psst"
    ]
    refused = [
        http.delete(members_path(dm, alice)),
        http.put(members_path(dm, eve)),
        http.delete(members_path(dm, bob)),
        http.put(bans_path(dm, bob)),
        http.delete(bans_path(dm, bob)),
        http.get(bans_path(dm)),
        http.patch(members_path(dm, bob), json={"role": "owner"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused), [r.text for r in refused]
    assert members(http, dm) == {alice.username: "member", bob.username: "member"}
    outsider = api(server, eve)
    assert outsider.get(f"/api/rooms/{dm}").status_code == 404
    assert outsider.get(messages_path(dm)).status_code == 404
    assert outsider.put(members_path(dm, eve)).status_code == 404
    assert eve.username not in members(http, dm)


@pytest.mark.parametrize("name", ["dm-abc", "dm-", "dm-0123456789abcdef"])
def test_dm_names_are_reserved(server: Server, crowd: Crowd, name: str) -> None:
    """`POST /api/rooms` with a name starting `dm-` → 422 (the server names DMs); a name merely
    containing it is fine."""
    http = api(server, crowd.owner)
    assert_validation_error(http.post("/api/rooms", json={"name": name}))
    assert http.get(f"/api/rooms/{name}").status_code == 404
    r = http.post("/api/rooms", json={"name": unique("x-") + name})
    assert r.status_code == 201, r.text


def test_the_rooms_form_keeps_dm_names_too(server: Server, crowd: Crowd) -> None:
    """The rooms page's form refuses a name starting `dm-` as the API does (400, no room);
    another name it creates."""
    client, csrf = browser(server)
    assert sign_in(client, csrf, crowd.owner).status_code == 303
    csrf = client.cookies[CSRF_COOKIE]  # Renewed at sign-in.
    name = "dm-" + unique("form-")
    r = client.post("/rooms", data={"name": name, "csrf_token": csrf})
    assert r.status_code == 400, r.text
    assert "direct messages" in r.text
    assert api(server, crowd.owner).get(f"/api/rooms/{name}").status_code == 404
    fine = unique("form-")
    assert client.post("/rooms", data={"name": fine, "csrf_token": csrf}).status_code == 303
    assert room_of(api(server, crowd.owner), fine)["role"] == "owner"


# --- bad input -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_room(server: Server, crowd: Crowd) -> str:
    """A public room the owner keeps, for requests that change nothing when refused."""
    return new_room(server, crowd, "public")


def body_requests(room: str, member: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The new operations with a JSON body, and a body each accepts."""
    return [
        ("POST", "/api/rooms", {"name": unique("b-"), "kind": "public", "topic": "t"}),
        ("PATCH", f"/api/rooms/{room}", {"topic": "t"}),
        ("PATCH", members_path(room, member), {"role": "member"}),
        ("POST", "/api/dms", {"users": [member]}),
    ]


def test_bad_bodies_are_422(server: Server, crowd: Crowd, shared_room: str) -> None:
    """Malformed JSON, a non-object, extra fields, missing fields and wrong types → 422 in
    FastAPI's shape, for every new operation with a body; the well-formed body passes."""
    http = api(server, crowd.owner)
    for method, path, good in body_requests(shared_room, crowd.member.username):
        key = next(iter(good))
        bad: list[dict[str, Any]] = [
            {"content": b'{"oops": ', "headers": {"Content-Type": "application/json"}},
            {"json": []},
            {"json": "text"},
            {"json": {**good, "extra": 1}},
            {"json": {}},
            {"json": {**good, key: 12}},
            {"json": {**good, key: None}},
            {"json": {**good, key: [good[key]]}},
        ]
        for kwargs in bad:
            r = http.request(method, path, **kwargs)
            assert r.status_code == 422, f"{method} {path} {kwargs}: {r.status_code} {r.text}"
            assert isinstance(r.json()["detail"], list) and r.json()["detail"]
        r = http.request(method, path, json=good)
        assert r.status_code in (200, 201, 204), f"{method} {path}: {r.text}"


def test_room_fields_are_checked(server: Server, crowd: Crowd, shared_room: str) -> None:
    """A topic over 250 characters, or with NUL, or a kind other than public/private, or a
    bad name → 422; 250 characters is fine, and `PATCH` sets it."""
    http = api(server, crowd.owner)
    for body in (
        {"name": unique("t-"), "topic": "x" * 251},
        {"name": unique("t-"), "topic": "a\x00b"},
        {"name": unique("t-"), "kind": "dm"},
        {"name": unique("t-"), "kind": "secret"},
        {"name": "Caps"},
        {"name": ""},
        {"name": "x" * 65},
    ):
        assert_validation_error(http.post("/api/rooms", json=body))
    assert_validation_error(http.patch(f"/api/rooms/{shared_room}", json={"topic": "x" * 251}))
    r = http.post("/api/rooms", json={"name": unique("t-"), "topic": "x" * 250})
    assert r.status_code == 201, r.text
    assert r.json()["topic"] == "x" * 250
    r = http.patch(f"/api/rooms/{shared_room}", json={"topic": "y" * 250})
    assert r.status_code == 200, r.text
    assert room_of(http, shared_room)["topic"] == "y" * 250


def test_topic_is_for_owners_and_moderators(server: Server, crowd: Crowd) -> None:
    """`PATCH /api/rooms/{name} {topic}`: owners and moderators → 200 the room; a member or
    a non-member of a public room → 403."""
    room = new_room(server, crowd, "public")
    for caller, status in (
        (crowd.member, 403),
        (crowd.outsider, 403),
        (crowd.moderator, 200),
        (crowd.owner, 200),
    ):
        topic = f"by {caller.username}"
        r = api(server, caller).patch(f"/api/rooms/{room}", json={"topic": topic})
        assert r.status_code == status, r.text
        if status == 200:
            assert r.json()["topic"] == topic
            assert room_of(api(server, crowd.outsider), room)["topic"] == topic


def all_operations(room: str, username: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", "/api/rooms", None),
        ("POST", "/api/rooms", {"name": unique("n-")}),
        ("POST", "/api/dms", {"users": [username]}),
        *((m, p.replace("SELF", username), b) for m, p, b in probes(room, username)),
    ]


def test_unauthenticated_requests_are_401(server: Server, crowd: Crowd, shared_room: str) -> None:
    """Every conversation operation without a token, or with a bad one → 401."""
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        http = api(server, None)
        for method, path, body in all_operations(shared_room, crowd.member.username):
            r = http.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text}"
    assert crowd.member.username in members(api(server, crowd.owner), shared_room)


def test_cookie_writes_need_the_csrf_header(server: Server, crowd: Crowd) -> None:
    """Signed in by the cookie, every request that changes something (POST, PUT, PATCH,
    DELETE) without the CSRF header → 403 and changes nothing; with it, it works."""
    room = new_room(server, crowd, "public", moderator=False, member=False)
    csrf = "c" * 43
    cookies = {"access_token": crowd.owner.token, CSRF_COOKIE: csrf}
    http = server.client(cookies=cookies)
    target = crowd.others[0]
    writes: list[tuple[str, str, Any]] = [
        ("PATCH", f"/api/rooms/{room}", {"topic": "via cookie"}),
        ("PUT", members_path(room, target), None),
        ("PATCH", members_path(room, target), {"role": "moderator"}),
        ("PUT", bans_path(room, crowd.outsider), None),
        ("DELETE", bans_path(room, crowd.outsider), None),
        ("DELETE", members_path(room, target), None),
        ("POST", "/api/dms", {"users": [target.username]}),
    ]
    for method, path, body in writes:
        r = http.request(method, path, json=body)
        assert r.status_code == 403, f"{method} {path}: {r.status_code} {r.text}"
        r = http.request(method, path, json=body, headers={CSRF_HEADER: "x" * 43})
        assert r.status_code == 403, f"{method} {path}: {r.status_code} {r.text}"
    owner = api(server, crowd.owner)
    assert room_of(owner, room)["topic"] == ""
    assert members(owner, room) == {crowd.owner.username: "owner"}
    assert owner.get(bans_path(room)).json() == []
    # The reads need no header; each write succeeds with it.
    assert http.get(members_path(room)).status_code == 200
    for method, path, body in writes:
        r = http.request(method, path, json=body, headers={CSRF_HEADER: csrf})
        assert r.status_code in (200, 201, 204), f"{method} {path}: {r.status_code} {r.text}"
    assert room_of(owner, room)["topic"] == "via cookie"


def test_oversized_bodies_are_413(server: Server, crowd: Crowd, shared_room: str) -> None:
    """A body over the size limit → 413 on every new operation with a body, with or without
    a Content-Length, and nothing changes."""
    http = api(server, crowd.owner)
    content = b'{"topic":"' + b"x" * OVERSIZED + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 64 * 1024):
            yield content[start : start + 64 * 1024]

    headers = {"Content-Type": "application/json"}
    topic = room_of(http, shared_room)["topic"]
    for method, path, _ in body_requests(shared_room, crowd.member.username):
        r = http.request(method, path, content=content, headers=headers)
        assert r.status_code == 413, f"{method} {path}: {r.status_code}"
        r = http.request(method, path, content=chunks(), headers=headers)
        assert r.status_code == 413, f"{method} {path}: {r.status_code}"
    assert room_of(http, shared_room)["topic"] == topic


def test_unknown_rooms_and_users_are_404(server: Server, crowd: Crowd, shared_room: str) -> None:
    """Every operation on a room that does not exist (or a name no room can have) → 404;
    naming a user who does not exist in a room the caller moderates → 404."""
    http = api(server, crowd.owner)
    for room in (unique("none-"), "NotARoom", "a" * 200, "%00"):
        for method, path, body in probes(room, crowd.member.username):
            path = path.replace("SELF", crowd.owner.username)
            r = http.request(method, path, json=body)
            assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
    for ghost in (unique("ghost"), "no body", "x" * 100, "%00"):
        for method, path, body in (
            ("PUT", members_path(shared_room, ghost), None),
            ("DELETE", members_path(shared_room, ghost), None),
            ("PATCH", members_path(shared_room, ghost), {"role": "member"}),
            ("PUT", bans_path(shared_room, ghost), None),
            ("DELETE", bans_path(shared_room, ghost), None),
        ):
            r = http.request(method, path, json=body)
            assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
    # Positive control: the same requests about a real member work.
    r = http.patch(members_path(shared_room, crowd.member), json={"role": "member"})
    assert r.status_code == 204, r.text


Request = tuple[httpx.Client, str, str, Any]


def at_once(*requests: Request) -> list[int]:
    """Send `(client, method, path, json)` requests at the same moment, each from a thread
    of its own; their statuses."""
    barrier = threading.Barrier(len(requests))

    def send(request: Request) -> int:
        http, method, path, body = request
        barrier.wait()
        return http.request(method, path, json=body).status_code

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


@pytest.mark.parametrize("how", ["demote", "leave"])
def test_two_owners_removing_each_other_at_once_leave_one(
    server: Server, crowd: Crowd, how: str
) -> None:
    """A room keeps at least one owner also when its two owners demote each other, or both
    leave, at the same moment: one succeeds (204), the other is refused (409, or 403 when
    it already counts as no longer an owner)."""
    first, second = api(server, crowd.owner), api(server, crowd.moderator)
    for _ in range(8):
        room = new_room(server, crowd, "private", moderator=False)
        add(first, room, crowd.moderator)
        r = first.patch(members_path(room, crowd.moderator), json={"role": "owner"})
        assert r.status_code == 204, r.text
        if how == "demote":
            demote = {"role": "member"}
            statuses = at_once(
                (first, "PATCH", members_path(room, crowd.moderator), demote),
                (second, "PATCH", members_path(room, crowd.owner), demote),
            )
        else:
            statuses = at_once(
                (first, "DELETE", members_path(room, crowd.owner), None),
                (second, "DELETE", members_path(room, crowd.moderator), None),
            )
        assert statuses.count(204) == 1 and set(statuses) <= {204, 403, 409}, statuses
        roles = members(api(server, crowd.member), room)
        assert list(roles.values()).count("owner") == 1, roles


def test_an_admin_looking_in_does_not_join(server: Server, crowd: Crowd, admin: Account) -> None:
    """Posting makes one a member of a public room only: an admin who posts in a private room
    they are not in stays out of its members (they act as owners without being one), until
    they join it themselves (`PUT .../members/{you}` → 204)."""
    room = new_room(server, crowd, "private", moderator=False)
    http = api(server, admin)
    r = http.post(messages_path(room), json={"body": "a word from the admins"})
    assert r.status_code == 201, r.text
    assert admin.username not in members(http, room)
    assert room_of(http, room)["is_member"] is False
    assert http.put(members_path(room, admin)).status_code == 204
    assert members(http, room)[admin.username] == "member"
    # Positive control: in a public room the same post makes the admin a member.
    public = new_room(server, crowd, "public", moderator=False, member=False)
    assert http.post(messages_path(public), json={"body": "hello"}).status_code == 201
    assert members(http, public)[admin.username] == "member"


def test_a_ban_landing_during_a_join_keeps_the_user_out(server: Server, crowd: Crowd) -> None:
    """A user banned while they post in or join a public room is not left a member of it:
    whichever comes first, once the ban is in they are out (and stay banned)."""
    owner, banned = api(server, crowd.owner), api(server, crowd.others[0])
    who = crowd.others[0]
    for _ in range(20):
        room = new_room(server, crowd, "public", moderator=False, member=False)
        statuses = at_once(
            (owner, "PUT", bans_path(room, who), None),
            (banned, "POST", messages_path(room), {"body": "quick"}),
            (banned, "PUT", members_path(room, who), None),
            (banned, "PUT", members_path(room, who), None),
        )
        assert statuses[0] == 204
        # 429: the user's message rate (twenty posts in a few seconds) is no matter here.
        assert set(statuses[1:]) <= {201, 204, 403, 429}, statuses
        assert members(owner, room) == {crowd.owner.username: "owner"}
        assert owner.get(bans_path(room)).json() == [{"username": who.username}]
