"""Search (SPEC "Search (v2)"): `GET /api/search` finds messages by words, a prefix of the
last word and quoted phrases, newest first, only in the rooms the caller may read, never a
deleted message, and an edited message by its new words only. Runs on SQLite (FTS5) and,
with CHAT_TEST_DATABASE=postgresql, on PostgreSQL (tsvector + GIN).

Each test searches for a word of its own (`mark()`): the server is the session's, shared
with other tests."""

import secrets
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alembic import command

from chat import search, writer
from chat.db import alembic_config
from tests.conftest import TEST_DATABASE, Account, Server, make_settings, run_sql, unique
from tests.ws_helpers import post


@pytest.fixture(autouse=True, params=["sorted", "per room"])
def plan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with both ways of reading the index (every match sorted by time, or
    each room's newest), whichever the numbers of matches and rooms would pick: the
    servers run in this process."""
    always = {"sorted": 10**9, "per room": 0}[request.param]
    monkeypatch.setattr(search, "MATCHES_PER_ROOM", always)
    # PostgreSQL first reads the newest messages (`RECENT_WINDOW`): off with "sorted", a
    # few with "per room", so that a test's page comes from them or from the index.
    monkeypatch.setattr(search, "RECENT_WINDOW", {"sorted": 0, "per room": 4}[request.param])
    return str(request.param)


def mark() -> str:
    """A word no other message has: letters only, so that both indexes keep it whole."""
    return "zq" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(10))


def say(server: Server, account: Account, room: str, body: str) -> int:
    with server.client() as http:
        r = post(http, account, room, body)
    assert r.status_code == 201, r.text
    message_id: int = r.json()["id"]
    return message_id


def find(server: Server, account: Account, q: str, **params: Any) -> list[dict[str, Any]]:
    r = ask(server, account, q=q, **params)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["messages"]
    return found


def ask(server: Server, account: Account | None, **params: Any) -> httpx.Response:
    headers = account.headers if account is not None else {}
    with server.client(headers=headers) as http:
        return http.get("/api/search", params=params)


def bodies(found: list[dict[str, Any]]) -> list[str]:
    return [m["body"] for m in found]


def sql_message(room: str, message_id: int) -> str:
    return f"room_id = (SELECT id FROM rooms WHERE name = '{room}') AND seq = {message_id}"


def test_all_words_must_match_and_the_last_is_a_prefix(server: Server, user: Account) -> None:
    """Every word of `q` must match; the last one also matches as a prefix of a word, the
    others only whole; case does not matter; results come newest first."""
    room = server.create_room(user)
    t = mark()
    say(server, user, room, f"deploy the {t} server")
    say(server, user, room, f"the {t} deployment failed")
    say(server, user, room, f"{t} something else")
    assert bodies(find(server, user, f"{t} deploy")) == [
        f"the {t} deployment failed",
        f"deploy the {t} server",
    ]
    assert bodies(find(server, user, f"DEPLOY {t.upper()}")) == [f"deploy the {t} server"]
    assert bodies(find(server, user, f"deploy {t[:6]}")) == [f"deploy the {t} server"]
    assert bodies(find(server, user, f"{t} dep")) == [
        f"the {t} deployment failed",
        f"deploy the {t} server",
    ]
    assert bodies(find(server, user, f"{t} se")) == [f"deploy the {t} server"]
    assert find(server, user, f"{t} server failed") == []
    assert len(find(server, user, t)) == 3
    message = find(server, user, f"{t} else")[0]
    assert message["room"] == room and message["user"] == user.username
    assert {"id", "room", "user", "body", "ts", "nonce"} <= message.keys()


def test_prefix_completing_many_words(server: Server, user: Account) -> None:
    """The last word matches every word it begins, however many (here more than the
    search turns into a list of words); one that begins no word matches nothing."""
    room = server.create_room(user)
    t = mark()
    many = " ".join(f"{t}{i}" for i in range(search.PREFIX_MAX_WORDS + 6))
    say(server, user, room, many)
    say(server, user, room, f"{t}x one")
    assert bodies(find(server, user, t)) == [f"{t}x one", many]
    assert bodies(find(server, user, f"{t}1")) == [many]
    assert bodies(find(server, user, f"{t}x")) == [f"{t}x one"]
    assert find(server, user, f"{t}y") == []
    assert find(server, user, f"one {t}y") == []


def test_quoted_phrases(server: Server, user: Account) -> None:
    """A `"quoted phrase"` matches its words next to each other in that order, never as a
    prefix; phrases and words combine."""
    room = server.create_room(user)
    t = mark()
    say(server, user, room, f"{t} the quick brown fox")
    say(server, user, room, f"{t} brown and quick fox")
    assert bodies(find(server, user, f'"quick brown" {t}')) == [f"{t} the quick brown fox"]
    assert bodies(find(server, user, f'"{t} the quick"')) == [f"{t} the quick brown fox"]
    assert find(server, user, f'"{t} quick"') == []
    assert find(server, user, f'"quick bro" {t}') == []
    assert len(find(server, user, f"{t} quick fox")) == 2


def test_other_scripts_and_accents(server: Server, user: Account) -> None:
    """Words of any script are found, case-insensitively, accents included."""
    room = server.create_room(user)
    t = mark()
    say(server, user, room, f"{t} привет мир")
    say(server, user, room, f"{t} un café crème")
    say(server, user, room, f"{t} 東京 tokyo")
    assert bodies(find(server, user, f"{t} привет")) == [f"{t} привет мир"]
    assert bodies(find(server, user, f"{t} пр")) == [f"{t} привет мир"]
    assert bodies(find(server, user, f'"café crème" {t}')) == [f"{t} un café crème"]
    assert bodies(find(server, user, f"{t} 東京")) == [f"{t} 東京 tokyo"]


HOSTILE = [
    "NEAR(a b)",
    "a NEAR b",
    "*",
    "a*b",
    "body:x",
    "messages_fts:x",
    "^x",
    "x OR y",
    "x AND",
    "NOT x",
    "-x",
    "(",
    ")",
    "'",
    "''",
    "\\",
    "x:*",
    "a & b | !c <-> d",
    "') OR 1=1 --",
    '"" x',
    "{x}",
    "x;",
    "%_",
]


def test_hostile_queries_are_text(server: Server, user: Account) -> None:
    """What would be syntax to the database's query language (NEAR, OR, NOT, `*`, `:`,
    `^`, `-`, parentheses, quotes, `&`, `|`, `!`, `<->`) is text to the search: a query
    never fails with a server error, operator words are words that must match, and
    punctuation separates words as in the messages."""
    room = server.create_room(user)
    t = mark()
    say(server, user, room, f"{t} NEAR OR NOT body: x-ray")
    for q in HOSTILE + [f"{t} {q}" for q in HOSTILE]:
        r = ask(server, user, q=q)
        assert r.status_code in (200, 422), (q, r.status_code, r.text)
    found = [f"{t} NEAR OR NOT body: x-ray"]
    # The words are found as words (control), and as text when they look like operators.
    assert bodies(find(server, user, f"{t} near")) == found
    assert bodies(find(server, user, f"{t} OR")) == found
    assert bodies(find(server, user, f"{t} NOT")) == found
    assert bodies(find(server, user, f"{t} body:x")) == found
    assert bodies(find(server, user, f'"x-ray" {t}')) == found
    assert bodies(find(server, user, f"{t} x-ray")) == found
    # Had they been operators, these would have matched.
    assert find(server, user, f"{t} OR zzqqnothing") == []
    assert bodies(find(server, user, f"{t} NOT body")) == found
    assert find(server, user, f"{t} -zzqqnothing") == []
    assert bodies(find(server, user, f"{t} NOT(body x)")) == found
    assert find(server, user, f"{t} NEAR(zzqq nothing)") == []


@pytest.fixture(scope="module")
def places(server: Server) -> dict[str, Any]:
    """An owner who posted a word in a public room, a private room, a DM and a public room
    she then banned `outsider` from; `outsider` can read only the public room."""
    owner, outsider, friend = (server.register(unique("srch")) for _ in range(3))
    t = mark()
    http = server.client(headers=owner.headers)
    public = server.create_room(owner)
    private = unique("hidden-")
    assert http.post("/api/rooms", json={"name": private, "kind": "private"}).status_code == 201
    r = http.post("/api/dms", json={"users": [friend.username]})
    assert r.status_code == 201, r.text
    dm = r.json()["name"]
    shut = server.create_room(owner)
    for room in (public, private, dm, shut):
        say(server, owner, room, f"{t} in {room}")
    assert http.put(f"/api/rooms/{shut}/bans/{outsider.username}").status_code == 204
    return {
        "t": t,
        "owner": owner,
        "outsider": outsider,
        "friend": friend,
        "public": public,
        "private": private,
        "dm": dm,
        "shut": shut,
    }


def test_only_rooms_the_caller_may_read(server: Server, places: dict[str, Any]) -> None:
    """Search covers exactly the rooms the caller may read: a stranger finds the public
    room's message and not the private room's, the DM's, nor the room they are banned
    from; a DM's member finds it, the owner all four, a site admin all but the DM."""
    p = places
    t = p["t"]

    def rooms_found(account: Account) -> set[str]:
        return {m["room"] for m in find(server, account, t)}

    assert rooms_found(p["owner"]) == {p["public"], p["private"], p["dm"], p["shut"]}
    assert rooms_found(p["outsider"]) == {p["public"]}
    assert rooms_found(p["friend"]) == {p["public"], p["dm"], p["shut"]}
    assert server.admin is not None
    assert rooms_found(server.admin) == {p["public"], p["private"], p["shut"]}


def test_room_parameter_hides_what_the_caller_may_not_read(
    server: Server, places: dict[str, Any]
) -> None:
    """`room=` a private room of others or a DM of others answers exactly as a room that
    does not exist (404); banned from a public room, 403 as for its history; a member
    gets that room's messages."""
    p = places
    t = p["t"]
    missing = ask(server, p["outsider"], q=t, room="no-such-room-" + secrets.token_hex(3))
    assert missing.status_code == 404
    for account, room in (
        (p["outsider"], p["private"]),
        (p["outsider"], p["dm"]),
        (server.admin, p["dm"]),
    ):
        r = ask(server, account, q=t, room=room)
        assert (r.status_code, r.json()) == (404, missing.json()), (room, r.text)
    assert ask(server, p["outsider"], q=t, room=p["shut"]).status_code == 403
    for room in (p["private"], p["dm"], p["shut"]):
        assert bodies(find(server, p["owner"], t, room=room)) == [f"{t} in {room}"]


def test_deleted_messages_never_match(server: Server, user: Account) -> None:
    """A deleted message (flag set, body emptied, as the lifecycle stores it) is not found,
    nor one whose flag alone is set; its neighbours are (control)."""
    room = server.create_room(user)
    t = mark()
    gone = say(server, user, room, f"{t} first")
    flagged = say(server, user, room, f"{t} second")
    say(server, user, room, f"{t} third")
    assert len(find(server, user, t)) == 3
    run_sql(
        server, f"UPDATE messages SET deleted = true, body = '' WHERE {sql_message(room, gone)}"
    )
    run_sql(server, f"UPDATE messages SET deleted = true WHERE {sql_message(room, flagged)}")
    assert bodies(find(server, user, t)) == [f"{t} third"]
    assert find(server, user, f"{t} second") == []
    # A row removed outright leaves the index too.
    run_sql(server, f"DELETE FROM messages WHERE {sql_message(room, flagged)}")
    assert bodies(find(server, user, t)) == [f"{t} third"]


def test_edits_are_found_by_their_new_words(server: Server, user: Account) -> None:
    """An edited message is found by its new words and no longer by the old ones; a change
    that leaves the body alone keeps it found."""
    room = server.create_room(user)
    t, old, new = mark(), mark(), mark()
    edited = say(server, user, room, f"{t} {old}")
    assert bodies(find(server, user, old)) == [f"{t} {old}"]
    run_sql(server, f"UPDATE messages SET body = '{t} {new}' WHERE {sql_message(room, edited)}")
    assert find(server, user, old) == []
    assert bodies(find(server, user, new)) == [f"{t} {new}"]
    run_sql(server, f"UPDATE messages SET change_seq = 99 WHERE {sql_message(room, edited)}")
    assert bodies(find(server, user, new)) == [f"{t} {new}"]


def test_edits_and_deletions_through_the_api_keep_search_current(
    server: Server, user: Account
) -> None:
    """Edited through `PATCH .../messages/{id}`: found by the new words, not the old; deleted
    through `DELETE`: found no more; a reaction leaves it found; untouched neighbours stay
    found (the control)."""
    room = server.create_room(user)
    t, old, new = mark(), mark(), mark()
    edited = say(server, user, room, f"{t} {old}")
    deleted = say(server, user, room, f"{t} doomed")
    say(server, user, room, f"{t} kept")
    base = f"/api/rooms/{room}/messages"
    with httpx.Client(base_url=server.url, headers=user.headers, timeout=15) as http:
        assert http.patch(f"{base}/{edited}", json={"body": f"{t} {new}"}).status_code == 200
        assert http.put(f"{base}/{edited}/reactions/%F0%9F%91%8D").status_code == 204
        assert http.delete(f"{base}/{deleted}").status_code == 204
    assert find(server, user, old) == []
    assert bodies(find(server, user, new)) == [f"{t} {new}"]
    assert find(server, user, f"{t} doomed") == []
    assert sorted(bodies(find(server, user, t))) == sorted([f"{t} {new}", f"{t} kept"])


def sqlite_file(server: Server) -> str | None:
    """The server's SQLite file; None on PostgreSQL (which indexes in the commit)."""
    return None if server.settings.database_url else str(server.settings.data_dir / "chat.db")


def indexed_up_to(server: Server, room: str) -> int | None:
    """SQLite: the room's mark, every message up to it indexed; None on PostgreSQL."""
    path = sqlite_file(server)
    if path is None:
        return None
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT coalesce((SELECT seq FROM messages_fts_indexed WHERE room_id = r.id), 0) "
            "FROM rooms AS r WHERE r.name = ?",
            (room,),
        ).fetchone()
    return int(row[0])


def check_index(server: Server) -> None:
    """SQLite: the index agrees with its content view (fails on an entry left behind, or
    a 'delete' of an entry never written). Only right after a search, which indexed
    everything stored before it."""
    path = sqlite_file(server)
    if path is not None:
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")


@pytest.fixture
def never_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared server's writer (in this process) never finds itself idle long enough
    to index on its own: only a search, or a backlog past its bound, has it index."""
    monkeypatch.setattr(writer, "INDEX_IDLE_SECS", 3600.0)


def test_a_search_right_after_posting_finds_it(
    server: Server, user: Account, never_idle: None
) -> None:
    """A message acknowledged a moment ago is found by the very next search: on SQLite it
    was not in the index yet (its room's mark is below it), and the search indexed it
    first; on PostgreSQL its commit indexed it."""
    room = server.create_room(user)
    t = mark()
    ids = [say(server, user, room, f"{t} fresh {i}") for i in range(3)]
    before = indexed_up_to(server, room)
    if before is not None:
        assert before < ids[0]
    assert bodies(find(server, user, f"{t} fresh")) == [f"{t} fresh {i}" for i in (2, 1, 0)]
    after = indexed_up_to(server, room)
    if after is not None:
        assert after >= ids[-1]
    check_index(server)


def test_edits_and_deletions_before_indexing(
    server: Server, user: Account, never_idle: None
) -> None:
    """Messages edited, deleted (through the API, and a row removed outright) before the
    index holds them: found later by what they then hold only, and the index stays whole
    (no 'delete' of an entry never written). Then the same once indexed (the control:
    there the triggers do the work)."""
    room = server.create_room(user)
    t, old, new = mark(), mark(), mark()
    edited = say(server, user, room, f"{t} {old}")
    deleted = say(server, user, room, f"{t} doomed")
    removed = say(server, user, room, f"{t} removed")
    say(server, user, room, f"{t} kept")
    marked = indexed_up_to(server, room)
    if marked is not None:
        assert marked < edited
    base = f"/api/rooms/{room}/messages"
    with httpx.Client(base_url=server.url, headers=user.headers, timeout=15) as http:
        assert http.patch(f"{base}/{edited}", json={"body": f"{t} {new}"}).status_code == 200
        assert http.delete(f"{base}/{deleted}").status_code == 204
    run_sql(server, f"DELETE FROM messages WHERE {sql_message(room, removed)}")
    assert find(server, user, old) == []
    assert bodies(find(server, user, new)) == [f"{t} {new}"]
    assert sorted(bodies(find(server, user, t))) == sorted([f"{t} {new}", f"{t} kept"])
    check_index(server)
    # Indexed now: an edit and a removal go through the triggers.
    newer = mark()
    with httpx.Client(base_url=server.url, headers=user.headers, timeout=15) as http:
        assert http.patch(f"{base}/{edited}", json={"body": f"{t} {newer}"}).status_code == 200
    kept = find(server, user, f"{t} kept")[0]["id"]
    run_sql(server, f"DELETE FROM messages WHERE {sql_message(room, kept)}")
    assert find(server, user, new) == []
    assert bodies(find(server, user, t)) == [f"{t} {newer}"]
    check_index(server)


def test_author_filter(server: Server, user: Account) -> None:
    """`user=` keeps to one author (any case of the name); an unknown name finds nothing."""
    other = server.register()
    room = server.create_room(user)
    t = mark()
    say(server, user, room, f"{t} mine")
    say(server, other, room, f"{t} theirs")
    assert bodies(find(server, user, t, user=user.username.upper())) == [f"{t} mine"]
    assert bodies(find(server, user, t, user=other.username)) == [f"{t} theirs"]
    assert find(server, user, t, user="nobody" + secrets.token_hex(4)) == []
    assert len(find(server, user, t)) == 2


def pages(server: Server, account: Account, **params: Any) -> list[list[int]]:
    """Follow `Link: rel="next"` from the first page; the ids of each page."""
    result = []
    with server.client(headers=account.headers) as http:
        r = http.get("/api/search", params=params)
        while True:
            assert r.status_code == 200, r.text
            result.append([m["id"] for m in r.json()["messages"]])
            url = r.links.get("next", {}).get("url")
            if url is None:
                return result
            assert len(result) < 20
            r = http.get(url)


def test_limit_and_paging(server: Server, user: Account) -> None:
    """Newest first, `limit` at a time; `Link: rel="next"` leads through every match once:
    across rooms by an opaque cursor, within one room by `before=ID` (ids lower than ID)."""
    first, second = server.create_room(user), server.create_room(user)
    t = mark()
    posted: list[tuple[str, int]] = []
    for i in range(7):
        room = (first, second)[i % 2]
        posted.append((room, say(server, user, room, f"{t} number {i}")))
    newest_first = list(reversed(posted))
    found = find(server, user, t, limit=3)
    assert [(m["room"], m["id"]) for m in found] == newest_first[:3]
    assert len(find(server, user, t, limit=100)) == 7
    # Across rooms: pages of 3, 3, 1, the last without a next link.
    across = pages(server, user, q=t, limit=3)
    assert [len(page) for page in across] == [3, 3, 1]
    flat = [i for page in across for i in page]
    assert flat == [i for _, i in newest_first]
    # One room: by id.
    ids = [i for room, i in newest_first if room == first]
    assert pages(server, user, q=t, room=first, limit=2) == [ids[:2], ids[2:]]
    below = find(server, user, t, room=first, before=ids[1])
    assert [m["id"] for m in below] == ids[2:]
    assert ask(server, user, q=t, limit=7).headers.get("link") is None


def test_pages_over_the_newest_messages_and_the_index(
    server: Server, user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many of the newest messages are checked first (PostgreSQL's
    `RECENT_WINDOW`, none to all), the pages hold every match once, newest first: a common
    word, it with a rare one, a phrase whose words also come apart, a prefix; across rooms,
    in one, by an author, and matches behind a run of messages without them."""
    other = server.register()
    rooms = [server.create_room(user) for _ in range(3)]
    t, rare = mark(), mark()
    posted: list[tuple[str, int, str, str]] = []  # (room, id, author, body)
    for i in range(24):
        words = [t, "common"]
        if i < 16:
            if i % 5 == 0:
                words.append(rare)
            # "alpha beta" in every third, its words apart or the other way round otherwise.
            words.append(["alpha beta", "alpha x beta", "beta alpha"][i % 3])
        room, who = rooms[i % 3], (user, other)[i % 4 == 0]
        body = " ".join(words)
        posted.append((room, say(server, who, room, body), who.username, body))
    newest = list(reversed(posted))

    def expect(keep: Any, room: str | None = None) -> list[tuple[str, int]]:
        return [(r, i) for r, i, who, body in newest if keep(who, body) and room in (None, r)]

    phrase = f'"alpha beta" {t}'
    cases: list[tuple[dict[str, Any], list[tuple[str, int]]]] = [
        ({"q": f"common {t}"}, expect(lambda w, b: True)),
        ({"q": f"{t} {rare}"}, expect(lambda w, b: rare in b)),
        ({"q": phrase}, expect(lambda w, b: "alpha beta" in b)),
        ({"q": f"{t} alp"}, expect(lambda w, b: "alpha" in b)),
        ({"q": t, "user": other.username}, expect(lambda w, b: w == other.username)),
        ({"q": phrase, "room": rooms[0]}, expect(lambda w, b: "alpha beta" in b, rooms[0])),
        ({"q": t, "room": rooms[1]}, expect(lambda w, b: True, rooms[1])),
    ]
    assert all(len(want) > 3 for _, want in cases)
    # None first, a few (the page from them, from a larger window, or from the index),
    # all; SQLite has no window: once.
    for window in (0, 5, 10_000) if TEST_DATABASE == "postgresql" else (0,):
        monkeypatch.setattr(search, "RECENT_WINDOW", window)
        for params, want in cases:
            for limit in (3, 20):
                got = room_pages(server, user, **params, limit=limit)
                assert [m for page in got for m in page] == want, (window, limit, params)
                assert [len(page) for page in got[:-1]] == [limit] * (len(got) - 1)


def room_pages(server: Server, account: Account, **params: Any) -> list[list[tuple[str, int]]]:
    """As `pages`, the (room, id) of each message."""
    result = []
    with server.client(headers=account.headers) as http:
        r = http.get("/api/search", params=params)
        while True:
            assert r.status_code == 200, r.text
            result.append([(m["room"], m["id"]) for m in r.json()["messages"]])
            url = r.links.get("next", {}).get("url")
            if url is None:
                return result
            assert len(result) < 30
            r = http.get(url)


def test_bad_input(server: Server, user: Account) -> None:
    """No token: 401. Empty, blank, punctuation-only, unclosed-quote, over-long (over 256
    characters) or over-many (over 16 words and phrases) queries, limits outside 1-100,
    `before` without `room`, and a cursor the server did not give: 422. The largest
    accepted query and limit are answered (control)."""
    assert ask(server, None, q="hello").status_code == 401
    t = mark()
    bad: list[dict[str, Any]] = [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "*** --- !!!"},
        {"q": f'"{t} open'},
        {"q": "a" * (search.QUERY_MAX_CHARS + 1)},
        {"q": " ".join(["word"] * (search.QUERY_MAX_TERMS + 1))},
        {"q": t, "limit": 0},
        {"q": t, "limit": search.SEARCH_MAX_LIMIT + 1},
        {"q": t, "limit": "many"},
        {"q": t, "before": 5},
        {"q": t, "before": 0, "room": "general"},
        {"q": t, "cursor": "not-a-cursor"},
        {"q": t, "cursor": "x" * 500},
        {
            "q": t,
            "room": "general",
            "cursor": search.Cursor(datetime(2026, 1, 1, tzinfo=UTC), 1, 1).encode(),
        },
    ]
    for params in bad:
        r = ask(server, user, **params)
        assert r.status_code == 422, (params, r.text)
    for params in (
        {"q": "a" * search.QUERY_MAX_CHARS},
        {"q": " ".join(["word"] * search.QUERY_MAX_TERMS)},
        {"q": t, "limit": search.SEARCH_MAX_LIMIT},
        {"q": t, "limit": 1, "before": 5, "room": "general"},
        {"q": t, "before": 2**63 - 1, "room": "general"},
        {"q": t, "cursor": search.Cursor(datetime(2026, 1, 1, tzinfo=UTC), 1, 1).encode()},
    ):
        r = ask(server, user, **params)
        assert r.status_code == 200, (params, r.text)


def test_migration_indexes_stored_messages(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Migrating to 0012_search indexes the messages already stored: a database at 0010
    with messages written before search existed finds them after the upgrade; the
    deleted one stays out."""
    settings = make_settings(tmp_path_factory.mktemp("before-search"))
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, alembic_config(settings), "0010_message_lifecycle").result()
    t = mark()
    srv = Server(settings)
    rows = [
        "INSERT INTO users (username, username_key, password_hash, is_admin, token_key) "
        "VALUES ('old', 'old', 'x', false, 'k')",
        "INSERT INTO messages (room_id, seq, user_id, body, ts, deleted) VALUES "
        f"((SELECT id FROM rooms WHERE name = 'general'), 1, "
        f"(SELECT id FROM users WHERE username = 'old'), '{t} kept', "
        f"'2026-01-01 00:00:00', false)",
        "INSERT INTO messages (room_id, seq, user_id, body, ts, deleted) VALUES "
        f"((SELECT id FROM rooms WHERE name = 'general'), 2, "
        f"(SELECT id FROM users WHERE username = 'old'), '{t} gone', "
        f"'2026-01-01 00:00:01', true)",
    ]
    for sql in rows:
        run_sql(srv, sql)
    srv.start()
    try:
        reader = srv.register()
        assert bodies(find(srv, reader, t)) == [f"{t} kept"]
    finally:
        srv.stop()
    if not settings.database_url:
        # The index agrees with its content view.
        with sqlite3.connect(settings.data_dir / "chat.db") as conn:
            conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")


def test_migration_carries_the_index(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Migrating from 0012_search (every message indexed by its insert trigger) to
    0013_search_index keeps that index: each room's mark is its last message, so the
    messages are found without being indexed again, and an edit of one replaces its
    entry (a mark below it would leave the old words found); a message posted after is
    found too, and the index stays whole."""
    settings = make_settings(tmp_path_factory.mktemp("before-search-index"))
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, alembic_config(settings), "0012_search").result()
    t, old, new = mark(), mark(), mark()
    srv = Server(settings)
    general = "(SELECT id FROM rooms WHERE name = 'general')"
    for sql in [
        "INSERT INTO users (username, username_key, password_hash, is_admin, token_key) "
        "VALUES ('old', 'old', 'x', false, 'k')",
        *(
            "INSERT INTO messages (room_id, seq, user_id, body, ts, deleted) VALUES "
            f"({general}, {seq}, (SELECT id FROM users WHERE username = 'old'), "
            f"'{t} {body}', '2026-01-01 00:00:0{seq}', false)"
            for seq, body in ((1, old), (2, "second"))
        ),
        f"UPDATE rooms SET last_seq = 2 WHERE id = {general}",
    ]:
        run_sql(srv, sql)
    srv.start()
    try:
        if sqlite_file(srv) is not None:
            assert indexed_up_to(srv, "general") == 2
        run_sql(
            srv, f"UPDATE messages SET body = '{t} {new}' WHERE room_id = {general} AND seq = 1"
        )
        reader = srv.register()
        assert find(srv, reader, old) == []
        assert bodies(find(srv, reader, new)) == [f"{t} {new}"]
        say(srv, reader, "general", f"{t} third")
        assert bodies(find(srv, reader, t)) == [f"{t} third", f"{t} second", f"{t} {new}"]
        check_index(srv)
    finally:
        srv.stop()
