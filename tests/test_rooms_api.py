"""Rooms and their history over REST: `/api/rooms` and `/api/rooms/{name}/messages`."""

import itertools
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Account, Server, make_settings, unique

MESSAGE_KEYS = {
    "id",
    "room",
    "user",
    "body",
    "ts",
    "nonce",
    "edited_at",
    "deleted",
    "reactions",
    "mentions",
}
# SPEC v2 "Conversations": the room object.
ROOM_KEYS = {
    "name",
    "kind",
    "topic",
    "created_at",
    "active_users",
    "member_count",
    "is_member",
    "role",
    "unread",
    "mentions",
    "last_message_id",
}


@pytest.fixture(scope="module")
def user(server: Server) -> Account:
    """One fresh account for this module (each registration costs two Argon2 runs)."""
    return server.register()


def _no_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.method} {response.request.url}"


def api(server: Server, account: Account | None = None) -> httpx.Client:
    """A client for `server` that fails the test on any 5xx answer."""
    headers = account.headers if account else {}
    return server.client(headers=headers, event_hooks={"response": [_no_5xx]})


def assert_validation_error(r: httpx.Response) -> None:
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list) and r.json()["detail"]


def messages_path(room: str) -> str:
    return f"/api/rooms/{room}/messages"


# --- rooms ------------------------------------------------------------------------------


def room_names(http: httpx.Client) -> list[str]:
    """Every room's name, following the list's pages."""
    names: list[str] = []
    url: str | None = "/api/rooms"
    while url is not None:
        r = http.get(url)
        assert r.status_code == 200, r.text
        names += [room["name"] for room in r.json()]
        url = r.links.get("next", {}).get("url")
    return names


def test_list_rooms_includes_general(server: Server, user: Account) -> None:
    """The room list holds `general`, each room as SPEC v2's room object."""
    r = api(server, user).get("/api/rooms")
    assert r.status_code == 200
    rooms = r.json()
    assert isinstance(rooms, list)
    for room in rooms:
        assert set(room) == ROOM_KEYS
        assert isinstance(room["active_users"], int) and room["active_users"] >= 0
        datetime.fromisoformat(room["created_at"])
    assert "general" in room_names(api(server, user))


def test_list_rooms_needs_a_token(server: Server) -> None:
    """Listing rooms without a token answers 401."""
    assert api(server).get("/api/rooms").status_code == 401


def test_create_room(server: Server, user: Account) -> None:
    """Creating a room answers 201 with the room, which then appears in the list."""
    name = unique("room-")
    r = api(server, user).post("/api/rooms", json={"name": name})
    assert r.status_code == 201, r.text
    room = r.json()
    assert set(room) == ROOM_KEYS
    assert room["name"] == name and room["active_users"] == 0
    created = datetime.fromisoformat(room["created_at"])
    assert created.tzinfo is not None
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)
    assert name in room_names(api(server, user))


def test_create_existing_room(server: Server, user: Account) -> None:
    """Creating a room whose name is taken, `general` included, answers 409."""
    name = server.create_room(user)
    client = api(server, user)
    assert client.post("/api/rooms", json={"name": name}).status_code == 409
    assert client.post("/api/rooms", json={"name": "general"}).status_code == 409


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "Upper"},
        {"name": "a" * 65},
        {"name": ""},
        {"name": "bad_name"},
        {"name": "bad name"},
        {"name": "bad/name"},
        {"name": "ünï"},
        {"name": "room\n"},
        {"name": 12},
        {"name": None},
        {},
        {"name": "fine", "extra": 1},
    ],
)
def test_create_room_rejects_bad_names(server: Server, poster: Account, payload: Any) -> None:
    """Names outside 1-64 of `a-z0-9-`, wrong types and extra fields answer 422."""
    assert_validation_error(api(server, poster).post("/api/rooms", json=payload))


# --- history ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A private server whose rate limit lets one user post a long history quickly."""
    srv = Server(
        make_settings(tmp_path_factory.mktemp("history"), rate_burst=10_000, rate_per_sec=1000)
    )
    srv.start()
    srv.admin = srv.register(unique("admin"))
    yield srv
    srv.stop()


HISTORY_SIZE = 120


@pytest.fixture(scope="module")
def history(busy_server: Server) -> tuple[Server, Account, str, list[int]]:
    """A room with HISTORY_SIZE messages, and their ids in posting order."""
    account = busy_server.register()
    room = busy_server.create_room(account)
    other = busy_server.create_room(account)
    client = api(busy_server, account)
    ids = []
    for i in range(HISTORY_SIZE):
        r = client.post(messages_path(room), json={"body": f"m{i}"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        # Interleave another room's messages: history must stay per room.
        if i % 10 == 0:
            assert client.post(messages_path(other), json={"body": "elsewhere"}).status_code == 201
    return busy_server, account, room, ids


def test_create_room_accepts_name_bounds(busy_server: Server) -> None:
    """Room names of 1 and 64 characters of `a-z0-9-` are accepted."""
    account = busy_server.register()
    client = api(busy_server, account)
    for name in ("z", "-", ("r-" + secrets.token_hex(40))[:64]):
        r = client.post("/api/rooms", json={"name": name})
        assert r.status_code == 201, (name, r.text)
        assert r.json()["name"] == name


def fetch(history: tuple[Server, Account, str, list[int]], **params: Any) -> httpx.Response:
    srv, account, room, _ids = history
    return api(srv, account).get(messages_path(room), params=params)


def ids_of(r: httpx.Response) -> list[int]:
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["messages"]]


def test_history_unknown_room(server: Server, user: Account) -> None:
    """History of a room that does not exist answers 404."""
    r = api(server, user).get(messages_path(unique("nope-")))
    assert r.status_code == 404
    assert api(server, user).get(messages_path("Not_A_Room")).status_code == 404


def test_history_of_new_room_is_empty(server: Server, user: Account, room: str) -> None:
    """A new room's history is an empty list."""
    r = api(server, user).get(messages_path(room))
    assert r.status_code == 200
    assert r.json() == {"messages": []}


def test_history_default_is_newest_50_oldest_first(history: Any) -> None:
    """Without parameters, history is the newest 50 messages of the room, oldest first."""
    _srv, _account, room, ids = history
    r = fetch(history)
    assert ids_of(r) == ids[-50:]
    messages = r.json()["messages"]
    assert [m["body"] for m in messages] == [
        f"m{i}" for i in range(HISTORY_SIZE - 50, HISTORY_SIZE)
    ]
    assert all(set(m) == MESSAGE_KEYS and m["room"] == room for m in messages)


@pytest.mark.parametrize("limit", [1, 7, 200])
def test_history_limit(history: Any, limit: int) -> None:
    """`limit` returns that many newest messages (or all there are), oldest first."""
    ids = history[3]
    assert ids_of(fetch(history, limit=limit)) == ids[-limit:]


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", ""])
def test_history_limit_out_of_bounds(history: Any, limit: str) -> None:
    """A `limit` outside 1-200 or not an integer answers 422."""
    assert_validation_error(fetch(history, limit=limit))


@pytest.mark.parametrize("param", ["before", "after"])
@pytest.mark.parametrize("value", ["abc", "-5", "1.5", str(2**70)])
def test_history_cursor_must_be_a_sane_integer(history: Any, param: str, value: str) -> None:
    """A `before`/`after` that is not a sane non-negative integer answers 422, never 5xx."""
    r = fetch(history, **{param: value})
    assert_validation_error(r)


def test_history_before_scrolls_back(history: Any) -> None:
    """`before=ID` gives the `limit` newest messages older than ID, oldest first."""
    ids = history[3]
    assert ids_of(fetch(history, before=ids[60], limit=10)) == ids[50:60]
    assert ids_of(fetch(history, before=ids[60])) == ids[10:60]
    assert ids_of(fetch(history, before=ids[3], limit=10)) == ids[:3]
    assert ids_of(fetch(history, before=ids[0])) == []


def test_history_after_catches_up(history: Any) -> None:
    """`after=ID` gives the `limit` oldest messages newer than ID, oldest first."""
    ids = history[3]
    assert ids_of(fetch(history, after=ids[60], limit=10)) == ids[61:71]
    assert ids_of(fetch(history, after=ids[0])) == ids[1:51]
    assert ids_of(fetch(history, after=ids[-3], limit=10)) == ids[-2:]
    assert ids_of(fetch(history, after=ids[-1])) == []
    assert ids_of(fetch(history, after=0, limit=5)) == ids[:5]


def test_history_pages_back_through_everything(history: Any) -> None:
    """Following `before` from the newest page walks the whole room once, without gaps."""
    ids = history[3]
    seen: list[int] = []
    page = ids_of(fetch(history, limit=25))
    while page:
        seen = page + seen
        page = ids_of(fetch(history, before=page[0], limit=25))
    assert seen == ids


# --- posting ----------------------------------------------------------------------------


def test_post_message(server: Server, user: Account, room: str) -> None:
    """Posting answers 201 with the stored message, body trimmed, which history then shows."""
    r = api(server, user).post(messages_path(room), json={"body": "  hello  \n", "nonce": "n-1"})
    assert r.status_code == 201, r.text
    message = r.json()
    assert set(message) == MESSAGE_KEYS
    assert isinstance(message["id"], int)
    assert message["room"] == room
    assert message["user"] == user.username
    assert message["body"] == "hello"
    assert message["nonce"] == "n-1"
    assert api(server, user).get(messages_path(room)).json()["messages"] == [message]


def test_post_message_without_nonce(server: Server, user: Account, room: str) -> None:
    """A message posted without a nonce is stored with `nonce: null`."""
    r = api(server, user).post(messages_path(room), json={"body": "plain"})
    assert r.status_code == 201
    assert r.json()["nonce"] is None


def test_post_message_ts_is_iso_utc(server: Server, user: Account, room: str) -> None:
    """A message's `ts` is ISO 8601 in UTC, close to now."""
    before = datetime.now(UTC)
    ts = api(server, user).post(messages_path(room), json={"body": "when"}).json()["ts"]
    parsed = datetime.fromisoformat(ts)
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= parsed <= datetime.now(UTC) + timedelta(seconds=5)


def test_message_ids_strictly_increase(server: Server, room: str) -> None:
    """Message ids grow strictly within a room, whoever posts."""
    a, b = server.register(), server.register()
    ids = []
    for i in range(6):
        client = api(server, a if i % 2 else b)
        r = client.post(messages_path(room), json={"body": f"#{i}"})
        assert r.status_code == 201
        ids.append(r.json()["id"])
    assert all(x < y for x, y in itertools.pairwise(ids))
    assert ids_of(api(server, a).get(messages_path(room))) == ids


def test_repeated_nonce_is_stored_once(server: Server, user: Account, room: str) -> None:
    """The same nonce from the same user again returns the stored message and stores nothing."""
    client = api(server, user)
    first = client.post(messages_path(room), json={"body": "once", "nonce": "dup"})
    again = client.post(messages_path(room), json={"body": "once", "nonce": "dup"})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert ids_of(client.get(messages_path(room))) == [first.json()["id"]]


def test_post_message_body_at_limit(server: Server, user: Account, room: str) -> None:
    """A body of exactly 4000 characters after trimming is accepted."""
    r = api(server, user).post(messages_path(room), json={"body": "  " + "x" * 4000 + "  "})
    assert r.status_code == 201, r.text
    assert r.json()["body"] == "x" * 4000


@pytest.fixture(scope="module")
def poster(server: Server) -> Account:
    return server.register()


@pytest.fixture(scope="module")
def quiet_room(server: Server, poster: Account) -> str:
    return server.create_room(poster)


@pytest.mark.parametrize(
    "payload",
    [
        {"body": ""},
        {"body": "   \n\t "},
        {"body": "x" * 4001},
        {"body": "ok", "nonce": "n" * 65},
        {"body": "ok", "nonce": ""},
        {"body": 42},
        {"body": ["hi"]},
        {"body": None},
        {"body": "ok", "nonce": 7},
        {"nonce": "only"},
        {"body": "ok", "extra": True},
        "just a string",
    ],
)
def test_post_message_rejects_bad_bodies(
    server: Server, poster: Account, quiet_room: str, payload: Any
) -> None:
    """Empty or whitespace bodies, bodies over 4000, nonces over 64 and wrong types get 422."""
    client = api(server, poster)
    assert_validation_error(client.post(messages_path(quiet_room), json=payload))
    assert client.get(messages_path(quiet_room)).json()["messages"] == []


def test_post_message_unknown_room(server: Server, user: Account) -> None:
    """Posting to a room that does not exist answers 404."""
    r = api(server, user).post(messages_path(unique("ghost-")), json={"body": "hi"})
    assert r.status_code == 404


def test_post_message_needs_a_token(server: Server, room: str) -> None:
    """Posting without a token answers 401 and stores nothing."""
    assert api(server).post(messages_path(room), json={"body": "hi"}).status_code == 401


def test_rate_limit(make_server: Callable[..., Server]) -> None:
    """Over the burst a user gets 429 with Retry-After, while another user is unaffected."""
    srv = make_server(rate_burst=3, rate_per_sec=0.5)
    noisy, quiet = srv.register(), srv.register()
    room = srv.create_room(noisy)
    client = api(srv, noisy)
    for i in range(3):
        assert client.post(messages_path(room), json={"body": f"b{i}"}).status_code == 201
    r = client.post(messages_path(room), json={"body": "too many"})
    assert r.status_code == 429
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 3
    assert api(srv, quiet).post(messages_path(room), json={"body": "mine"}).status_code == 201
    bodies = [m["body"] for m in client.get(messages_path(room)).json()["messages"]]
    assert bodies == ["b0", "b1", "b2", "mine"]


def test_oversized_request_body(server: Server, user: Account, room: str) -> None:
    """A 2 MB request body answers 413, with or without a Content-Length."""
    content = b'{"body":"' + b"x" * (2 * 1024 * 1024) + b'"}'
    headers = {"Content-Type": "application/json"}
    client = api(server, user)
    assert client.post(messages_path(room), content=content, headers=headers).status_code == 413

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 64 * 1024):
            yield content[start : start + 64 * 1024]

    r = client.post(messages_path(room), content=chunks(), headers=headers)
    assert r.status_code == 413
    assert client.get(messages_path(room)).json()["messages"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/rooms/%00/messages",
        "/api/rooms/..%2F..%2Fetc/messages",
        "/api/rooms/" + "a" * 5000 + "/messages",
        "/api/rooms/general/messages?before=1&after=1&limit=200",
        "/api/rooms/general/messages?limit=1&limit=2",
    ],
)
def test_odd_requests_never_5xx(server: Server, poster: Account, path: str) -> None:
    """Odd room names and query strings get a 4xx or an answer, never a 5xx."""
    r = api(server, poster).get(path)
    assert r.status_code in (200, 404, 422)
