"""A private room and a DM exist only for their members: anyone else learns nothing of them.

SPEC "Conversations (v2)": a private room's non-member gets 404 on REST and 4404 on the
socket, "exactly as for a room that does not exist"; a DM is its members' alone (site
admins included: they "never see DMs they are not in"). These tests take the list of
routes from the application itself, so that a route added later is covered, or fails the
test until it is.
"""

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from chat import ws
from chat.closecodes import CloseCode
from tests.conftest import PASSWORD, Account, Server, of_type, recv_until, unique
from tests.ws_helpers import closed_with, frames_until, post, send, welcome

# What a caller names a room by: the `{name}` of a path, or a `room` query parameter.
ROOM_PATH_PARAM = "name"
ROOM_QUERY_PARAM = "room"
# Headers that differ between any two responses, whatever they are about.
VOLATILE_HEADERS = {"date"}
PLACEHOLDER = "{name}"


@dataclass(frozen=True)
class Exercise:
    """How to call one route with a room name: the JSON body it needs to get past
    validation (so that the room is looked at), and what a member gets: `in_private` for
    the private room's owner, `in_dm` for a DM's member (acting on `bystander`)."""

    json: dict[str, Any] | None
    in_private: int
    in_dm: int
    # Other query parameters it needs (the room goes in `room` when not in the path).
    params: dict[str, str] | None = None


# Every route that takes a room name, in the order the members' positive controls run
# (each one leaves the private room as the next expects: the bystander is added, made
# moderator, removed, banned, let back).
EXERCISES: dict[tuple[str, str], Exercise] = {
    ("GET", "/api/rooms/{name}"): Exercise(None, 200, 200),
    ("PATCH", "/api/rooms/{name}"): Exercise({"topic": "plans"}, 200, 200),
    ("GET", "/api/rooms/{name}/members"): Exercise(None, 200, 200),
    ("PUT", "/api/rooms/{name}/members/{username}"): Exercise(None, 204, 403),
    ("PATCH", "/api/rooms/{name}/members/{username}"): Exercise({"role": "moderator"}, 204, 403),
    ("DELETE", "/api/rooms/{name}/members/{username}"): Exercise(None, 204, 403),
    ("GET", "/api/rooms/{name}/bans"): Exercise(None, 200, 403),
    ("PUT", "/api/rooms/{name}/bans/{username}"): Exercise(None, 204, 403),
    ("DELETE", "/api/rooms/{name}/bans/{username}"): Exercise(None, 204, 403),
    ("GET", "/api/rooms/{name}/messages"): Exercise(None, 200, 200),
    ("POST", "/api/rooms/{name}/messages"): Exercise({"body": "hello"}, 201, 201),
    # On the room's first message, the owner's: in the DM the member acts on it, and may
    # react but neither edit nor delete it.
    ("PATCH", "/api/rooms/{name}/messages/{message_id}"): Exercise({"body": "edited"}, 200, 403),
    ("PUT", "/api/rooms/{name}/messages/{message_id}/reactions/{emoji}"): Exercise(None, 204, 204),
    ("DELETE", "/api/rooms/{name}/messages/{message_id}/reactions/{emoji}"): Exercise(
        None, 204, 204
    ),
    ("DELETE", "/api/rooms/{name}/messages/{message_id}"): Exercise(None, 204, 403),
    ("PUT", "/api/rooms/{name}/read"): Exercise({"up_to": 0}, 204, 204),
    ("GET", "/rooms/{name}"): Exercise(None, 200, 200),
    ("GET", "/api/search"): Exercise(None, 200, 200, {"q": "secret"}),
}
ROOM_SOCKET = "/ws/rooms/{name}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    # Names of its path parameters, and of its query parameters.
    path_params: frozenset[str]
    query_params: frozenset[str]

    @property
    def takes_room(self) -> bool:
        return ROOM_PATH_PARAM in self.path_params or ROOM_QUERY_PARAM in self.query_params


def http_routes(app: FastAPI) -> list[Route]:
    """Every HTTP route the application serves (API and pages), with its parameters."""
    routes = []
    for context in iter_route_contexts(app.routes):
        path, methods = context.path, context.methods
        if path is None or methods is None:
            continue  # A mount (static files): no parameters of ours.
        path_params = frozenset(re.findall(r"{(\w+)", path))
        query_params: frozenset[str] = frozenset()
        if isinstance(context.original_route, APIRoute):
            dependant = context.original_route.dependant
            query_params = frozenset(p.alias for p in _all_query_params(dependant))
        routes += [Route(m, path, path_params, query_params) for m in methods if m != "HEAD"]
    return routes


def _all_query_params(dependant: Any) -> Iterator[Any]:
    yield from dependant.query_params
    for sub in dependant.dependencies:
        yield from _all_query_params(sub)


def socket_routes() -> list[Route]:
    return [Route("WS", r.path, frozenset(r.param_convertors), frozenset()) for r in ws.routes]


def app_of(server: Server) -> FastAPI:
    assert server.server is not None
    app = server.server.config.app
    assert isinstance(app, FastAPI)
    return app


# --- the people and the rooms --------------------------------------------------------


@dataclass
class World:
    server: Server
    owner: Account
    member: Account
    outsider: Account
    # Was a member of the private room, then banned from it.
    banned: Account
    # Acted on by the members' positive controls.
    bystander: Account
    admin: Account
    private: str
    # The DM of `owner` and `member`.
    dm: str

    def bearer(self, account: Account) -> httpx.Client:
        return self.server.client(headers=account.headers)

    def browser(self, account: Account) -> httpx.Client:
        """Signed in through the sign-in page (the pages read the cookie), and carrying the
        bearer token too (the API reads that)."""
        http = self.server.client(headers=account.headers)
        csrf = http.get("/login").cookies["csrf_token"]
        r = http.post(
            "/login",
            data={"username": account.username, "password": PASSWORD, "csrf_token": csrf},
        )
        assert r.status_code == 303, r.text
        return http


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    assert server.admin is not None
    owner, member, outsider, banned, bystander = (server.register(unique("own")) for _ in range(5))
    http = server.client(headers=owner.headers)
    private = unique("secret-")
    r = http.post("/api/rooms", json={"name": private, "kind": "private"})
    assert r.status_code == 201, r.text
    for account in (member, banned):
        r = http.put(f"/api/rooms/{private}/members/{account.username}")
        assert r.status_code == 204, r.text
    r = http.put(f"/api/rooms/{private}/bans/{banned.username}")
    assert r.status_code == 204, r.text
    r = http.post("/api/dms", json={"users": [member.username]})
    assert r.status_code == 201, r.text
    dm = r.json()["name"]
    assert dm.startswith("dm-")
    for room in (private, dm):
        assert post(http, owner, room, f"a secret of {room}").status_code == 201
    # Public rooms around the private one, so that the room list takes several pages.
    for _ in range(4):
        server.create_room(owner, unique("secret-"))
    return World(server, owner, member, outsider, banned, bystander, server.admin, private, dm)


def missing_like(name: str) -> str:
    """A room name of the same shape and length that no room has."""
    prefix = "dm-" if name.startswith("dm-") else "x-"
    return (prefix + secrets.token_hex(len(name)))[: len(name)]


def outsiders(w: World, room: str) -> list[Account]:
    """Who must learn nothing of `room`: for the private room, a stranger and the banned
    former member; for the DM, a stranger and a site admin."""
    if room == w.private:
        return [w.outsider, w.banned]
    return [w.outsider, w.admin]


def fill(path: str, name: str, username: str = "") -> str:
    return (
        path.replace("{name}", name)
        .replace("{username}", username)
        .replace("{message_id}", "1")
        .replace("{emoji}", "%F0%9F%91%8D")
    )


def comparable(response: httpx.Response, name: str) -> tuple[int, str, list[tuple[str, str]]]:
    """Status, body and headers, with the room's name (should any answer repeat the name it
    was asked about) put back to a placeholder."""
    headers = sorted(
        (key, value.replace(name, PLACEHOLDER))
        for key, value in response.headers.multi_items()
        if key not in VOLATILE_HEADERS
    )
    return response.status_code, response.text.replace(name, PLACEHOLDER), headers


def call(http: httpx.Client, key: tuple[str, str], room: str, username: str) -> httpx.Response:
    method, path = key
    exercise = EXERCISES[key]
    params = dict(exercise.params or {})
    if PLACEHOLDER not in path:
        params[ROOM_QUERY_PARAM] = room
    return http.request(method, fill(path, room, username), json=exercise.json, params=params)


def socket_close(server: Server, account: Account, room: str) -> tuple[int, str]:
    with server.ws(fill(ROOM_SOCKET, room), account) as sock:
        closed = closed_with(sock)
    return closed.code, closed.reason


def everything_said(response: httpx.Response) -> str:
    return response.text + json.dumps(response.headers.multi_items())


# --- the tests -----------------------------------------------------------------------


def test_every_route_that_takes_a_room_is_exercised(server: Server) -> None:
    """Every HTTP and WebSocket route of the application that takes a room name (a `{name}`
    path parameter or a `room` query parameter) is in this file's list of exercises, so the
    tests below cover it; the list names no route the application lacks. The routes come
    from the application (and hold every path of its OpenAPI document)."""
    app = app_of(server)
    routes = http_routes(app)
    documented = set(app.openapi()["paths"])
    assert documented <= {r.path for r in routes}, "the enumeration misses documented routes"
    # Live: the enumeration sees the room routes, pages and sockets.
    taking = {(r.method, r.path) for r in routes if r.takes_room}
    assert ("GET", "/rooms/{name}") in taking and ("GET", "/api/rooms/{name}") in taking
    missing = taking - EXERCISES.keys()
    assert not missing, f"routes taking a room name with no exercise here: {sorted(missing)}"
    stale = EXERCISES.keys() - taking
    assert not stale, f"exercises of routes the application lacks: {sorted(stale)}"
    sockets = {r.path for r in socket_routes() if r.takes_room}
    assert sockets == {ROOM_SOCKET}, f"sockets taking a room name: {sorted(sockets)}"


@pytest.mark.parametrize("which", ["private", "dm"])
def test_every_room_route_answers_as_for_no_such_room(world: World, which: str) -> None:
    """For every route that takes a room name, a signed-in non-member of a private room (a
    stranger, or a banned former member) and a third person to a DM (a stranger, or a site
    admin) get exactly what a room name never used gives: the same status, body and headers,
    for `{username}` routes with their own name and with a member's; and on the room socket
    the same close code (4404) and reason. The same calls by a member do reach the room."""
    w = world
    room = w.private if which == "private" else w.dm
    missing = missing_like(room)
    for account in outsiders(w, room):
        http = w.browser(account)
        for key in EXERCISES:
            for username in (account.username, w.member.username):
                nothing = call(http, key, missing, username)
                assert nothing.status_code == 404, (key, nothing.text)
                hidden = call(http, key, room, username)
                assert comparable(hidden, room) == comparable(nothing, missing), (
                    account.username,
                    key,
                    username,
                )
        code, reason = socket_close(w.server, account, room)
        assert code == CloseCode.NOT_FOUND
        assert (code, reason) == socket_close(w.server, account, missing)
    # Positive controls: a member is answered about the room itself.
    insider = w.owner if which == "private" else w.member
    http = w.browser(insider)
    for key, exercise in EXERCISES.items():
        r = call(http, key, room, w.bystander.username)
        expected = exercise.in_private if which == "private" else exercise.in_dm
        assert r.status_code == expected, (key, r.text)
    with w.server.ws(fill(ROOM_SOCKET, room), insider) as sock:
        assert welcome(sock)["room"] == room


def test_room_lists_never_name_the_room(world: World) -> None:
    """`GET /api/rooms` (every page) and the `/rooms` page (every page) never name a private
    room to a non-member nor a DM to a third person, admins included; its members find both
    in the same lists."""
    w = world

    def api_names(account: Account) -> tuple[set[str], str]:
        http = w.bearer(account)
        names: set[str] = set()
        said = ""
        url: str | None = "/api/rooms?limit=3"
        pages = 0
        while url is not None:
            r = http.get(url)
            assert r.status_code == 200, r.text
            names |= {room["name"] for room in r.json()}
            said += everything_said(r)
            url = r.links.get("next", {}).get("url")
            pages += 1
        assert pages > 1, "the list should take several pages here"
        return names, said

    def page_text(account: Account) -> str:
        http = w.browser(account)
        said = ""
        url: str | None = "/rooms"
        while url is not None:
            r = http.get(url)
            assert r.status_code == 200, r.text
            said += everything_said(r)
            more = re.search(r'href="(/rooms\?after=[^"]+)"', r.text)
            url = more.group(1) if more else None
        return said

    for account in (w.owner, w.member):
        names, said = api_names(account)
        assert {w.private, w.dm} <= names
        assert w.private in page_text(account) and w.dm in page_text(account)
    for account, hidden in (
        (w.outsider, (w.private, w.dm)),
        (w.banned, (w.private, w.dm)),
        (w.admin, (w.dm,)),
    ):
        names, said = api_names(account)
        assert "general" in names
        text = page_text(account)
        for name in hidden:
            assert name not in said and name not in text, (account.username, name)


def test_no_page_or_endpoint_names_the_room(world: World) -> None:
    """No route of the application that needs no parameter (API, pages, documents) says
    the private room's or the DM's name to an outsider, nor the DM's to a site admin who is
    not in it; a member's room list does (control)."""
    w = world
    plain = [
        r
        for r in http_routes(app_of(w.server))
        if r.method == "GET" and not r.path_params and not r.takes_room
    ]
    assert any(r.path == "/api/admin/active-users" for r in plain)
    member = w.browser(w.member)
    assert w.dm in everything_said(member.get("/api/rooms"))
    for account, hidden in (
        (w.outsider, (w.private, w.dm)),
        (w.banned, (w.private, w.dm)),
        (w.admin, (w.dm,)),
    ):
        http = w.browser(account)
        for route in plain:
            said = everything_said(http.get(route.path))
            for name in hidden:
                assert name not in said, (account.username, route.path, name)


def test_presence_and_typing_stay_inside(world: World) -> None:
    """Presence, typing and membership changes in a private room and a DM reach their
    members' sockets and never an outsider's socket in another room; the admins' active
    users (REST and `/ws/admin`) show who is in the private room (admins may read it) but
    never name the DM."""
    w = world
    with (
        w.server.ws("/ws/rooms/general", w.outsider) as stranger,
        w.server.ws("/ws/admin", w.admin) as admin,
        w.server.ws(fill(ROOM_SOCKET, w.private), w.member) as in_private,
        w.server.ws(fill(ROOM_SOCKET, w.dm), w.member) as in_dm,
    ):
        welcome(stranger)
        welcome(in_private)
        welcome(in_dm)
        with (
            w.server.ws(fill(ROOM_SOCKET, w.private), w.owner) as owner_private,
            w.server.ws(fill(ROOM_SOCKET, w.dm), w.owner) as owner_dm,
        ):
            welcome(owner_private)
            welcome(owner_dm)
            for sock, room in ((in_private, w.private), (in_dm, w.dm)):
                recv_until(
                    sock, of_type("presence", room=room, event="join", user=w.owner.username)
                )
            for sock in (owner_private, owner_dm):
                send(sock, {"type": "typing"})
            for sock, room in ((in_private, w.private), (in_dm, w.dm)):
                recv_until(sock, of_type("typing", room=room, user=w.owner.username))
            # Membership changes are the room's too.
            http = w.bearer(w.owner)
            joined = f"/api/rooms/{w.private}/members/{w.bystander.username}"
            assert http.put(joined).status_code == 204
            assert http.delete(joined).status_code == 204
            recv_until(in_private, of_type("member", event="kick", user=w.bystander.username))
            # The admins' views, while both rooms have people in them.
            active = w.bearer(w.admin).get("/api/admin/active-users")
            assert active.status_code == 200, active.text
            assert w.owner.username in active.json()["rooms"][w.private]
            assert w.dm not in everything_said(active)
            stats = frames_until(
                admin,
                lambda f: f.get("type") == "stats" and len(f["rooms"].get(w.private, [])) == 2,
            )
        # The owner left both rooms: the members hear it.
        for sock, room in ((in_private, w.private), (in_dm, w.dm)):
            recv_until(sock, of_type("presence", room=room, event="leave"))
        # Anything for the stranger's room arrives after all of the above was delivered.
        nonce = secrets.token_hex(8)
        with w.server.client() as http:
            assert post(http, w.outsider, "general", "barrier", nonce).status_code == 201
        heard = frames_until(stranger, lambda f: f.get("nonce") == nonce)
        for frame in heard:
            text = json.dumps(frame)
            assert w.private not in text and w.dm not in text, frame
        assert all(w.dm not in json.dumps(frame) for frame in stats)


def test_only_dms_have_dm_names(world: World) -> None:
    """Names starting `dm-` are kept for DMs: the `/rooms` page's form refuses them (400,
    no room made) as `POST /api/rooms` does (422), so a room that passes for a DM is one;
    another name is made (control)."""
    w = world
    http = w.browser(w.outsider)
    csrf = http.cookies["csrf_token"]
    taken = missing_like(w.dm)
    r = http.post("/rooms", data={"name": taken, "csrf_token": csrf})
    assert r.status_code == 400, r.text
    assert "kept for direct messages" in r.text
    assert http.post("/api/rooms", json={"name": taken}).status_code == 422
    assert http.get(f"/api/rooms/{taken}").status_code == 404
    made = unique("made-")
    r = http.post("/rooms", data={"name": made, "csrf_token": csrf})
    assert r.status_code == 303, r.text
    assert http.get(f"/api/rooms/{made}").status_code == 200
