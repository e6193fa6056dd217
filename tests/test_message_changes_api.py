"""The message lifecycle over REST (SPEC "Message lifecycle"): edit, delete and react, who
may do each, mentions, and what bad input gets."""

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from tests.conftest import Account, Server, run_sql, unique
from tests.ws_helpers import post

THUMBS = "\N{THUMBS UP SIGN}"


def call(
    server: Server, account: Account | None, method: str, path: str, body: Any = None
) -> httpx.Response:
    headers = account.headers if account is not None else {}
    with server.client(headers=headers) as http:
        return http.request(method, path, json=body)


def say(server: Server, account: Account, room: str, body: str) -> dict[str, Any]:
    with server.client() as http:
        r = post(http, account, room, body)
    assert r.status_code == 201, r.text
    message: dict[str, Any] = r.json()
    return message


def history(server: Server, account: Account, room: str) -> dict[int, dict[str, Any]]:
    r = call(server, account, "GET", f"/api/rooms/{room}/messages?limit=200")
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()["messages"]}


def count_rows(server: Server, sql: str) -> int:
    """One count, read from the server's database behind its back."""
    url = server.settings.database_url
    if not url:
        with sqlite3.connect(server.settings.data_dir / "chat.db") as conn:
            return int(conn.execute(sql).fetchone()[0])

    async def read() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    return int(asyncio.run(read()))


def msg_path(room: str, message_id: int | str) -> str:
    return f"/api/rooms/{room}/messages/{message_id}"


def reaction_path(room: str, message_id: int, emoji: str) -> str:
    return f"{msg_path(room, message_id)}/reactions/{quote(emoji, safe='')}"


def test_a_message_carries_its_lifecycle_fields(server: Server, user: Account, room: str) -> None:
    """A message also carries `edited_at` (null), `deleted` (false), `reactions` ({}) and
    `mentions` ([]), on posting and in history."""
    posted = say(server, user, room, "plain")
    for message in (posted, history(server, user, room)[posted["id"]]):
        assert message["edited_at"] is None and message["deleted"] is False
        assert message["reactions"] == {} and message["mentions"] == []


def test_edit_your_own_message(server: Server, user: Account, room: str) -> None:
    """PATCH edits your own message → 200 with its new state (`edited_at` set); history
    shows it; someone else's message → 403 and stays as it was."""
    other = server.register()
    mine, theirs = say(server, user, room, "frist"), say(server, other, room, "theirs")
    r = call(server, user, "PATCH", msg_path(room, mine["id"]), {"body": "  first  "})
    assert r.status_code == 200, r.text
    edited = r.json()
    assert edited["body"] == "first" and edited["id"] == mine["id"]
    assert edited["ts"] == mine["ts"] and edited["user"] == user.username
    edited_at = datetime.fromisoformat(edited["edited_at"])
    assert abs(edited_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert history(server, user, room)[mine["id"]] == edited
    r = call(server, user, "PATCH", msg_path(room, theirs["id"]), {"body": "hijacked"})
    assert r.status_code == 403, r.text
    assert history(server, user, room)[theirs["id"]]["body"] == "theirs"


def test_edit_window(make_server: Any) -> None:
    """Editing is allowed within `CHAT_EDIT_WINDOW_MINUTES` of sending, and refused (403)
    after it."""
    srv: Server = make_server(edit_window_minutes=5)
    amy = srv.register()
    room = srv.create_room(amy)
    fresh, old = say(srv, amy, room, "fresh"), say(srv, amy, room, "old")
    then = (datetime.now(UTC) - timedelta(minutes=6)).isoformat()
    if srv.settings.database_url:
        run_sql(srv, f"UPDATE messages SET ts = '{then}' WHERE seq = {old['id']}")
    else:
        stamp = then.replace("T", " ")
        run_sql(srv, f"UPDATE messages SET ts = '{stamp}' WHERE seq = {old['id']}")
    assert call(srv, amy, "PATCH", msg_path(room, fresh["id"]), {"body": "ok"}).status_code == 200
    r = call(srv, amy, "PATCH", msg_path(room, old["id"]), {"body": "too late"})
    assert r.status_code == 403, r.text
    assert history(srv, amy, room)[old["id"]]["body"] == "old"


def test_delete_own_and_as_moderator_and_admin(server: Server) -> None:
    """DELETE → 204: your own message, or anyone's in a room you moderate, or anyone's as
    site admin; a plain member may not delete someone else's (403). A deleted message keeps
    its id, user and ts; its body is "" and its reactions and mentions are gone."""
    assert server.admin is not None
    owner, mod, member = server.register(), server.register(), server.register()
    room = server.create_room(owner)
    for account in (mod, member):
        assert (
            call(
                server, account, "PUT", f"/api/rooms/{room}/members/{account.username}"
            ).status_code
            == 204
        )
    r = call(
        server, owner, "PATCH", f"/api/rooms/{room}/members/{mod.username}", {"role": "moderator"}
    )
    assert r.status_code == 204, r.text
    a = say(server, owner, room, f"hello @{member.username}")
    b, c, d = (say(server, member, room, text) for text in ("b", "c", "d"))
    assert a["mentions"] == [member.username]
    assert call(server, member, "PUT", reaction_path(room, a["id"], THUMBS)).status_code == 204
    assert call(server, member, "DELETE", msg_path(room, a["id"])).status_code == 403
    assert call(server, member, "DELETE", msg_path(room, b["id"])).status_code == 204
    assert call(server, mod, "DELETE", msg_path(room, c["id"])).status_code == 204
    assert call(server, server.admin, "DELETE", msg_path(room, d["id"])).status_code == 204
    assert call(server, owner, "DELETE", msg_path(room, a["id"])).status_code == 204
    seen = history(server, member, room)
    for original in (a, b, c, d):
        gone = seen[original["id"]]
        assert gone["deleted"] is True and gone["body"] == ""
        assert gone["reactions"] == {} and gone["mentions"] == []
        assert (gone["user"], gone["ts"]) == (original["user"], original["ts"])


def test_a_deleted_body_is_gone_from_the_database(server: Server, user: Account, room: str) -> None:
    """Deleting empties the body in the database too (not only in what is shown); a
    deleted message cannot be edited, reacted to or deleted again (404)."""
    secret = unique("secret-words-")
    message = say(server, user, room, secret)
    assert call(server, user, "DELETE", msg_path(room, message["id"])).status_code == 204
    count = count_rows(server, f"SELECT count(*) FROM messages WHERE body LIKE '%{secret}%'")
    positive = count_rows(server, "SELECT count(*) FROM messages WHERE deleted")
    assert count == 0 and positive >= 1
    for method, path, body in (
        ("PATCH", msg_path(room, message["id"]), {"body": "back"}),
        ("DELETE", msg_path(room, message["id"]), None),
        ("PUT", reaction_path(room, message["id"], THUMBS), None),
    ):
        r = call(server, user, method, path, body)
        assert r.status_code == 404, (method, r.text)


def test_reactions(server: Server, user: Account, room: str) -> None:
    """PUT adds the caller's reaction, DELETE takes it back (204 each, idempotent);
    `reactions` is {emoji: [usernames, sorted]}; a `:short_name:` is an emoji too, given
    URL-encoded."""
    zed, amy = server.register(unique("zed")), server.register(unique("amy"))
    message = say(server, user, room, "react to me")
    mid = message["id"]
    for account in (zed, amy, zed):
        assert call(server, account, "PUT", reaction_path(room, mid, THUMBS)).status_code == 204
    assert call(server, amy, "PUT", reaction_path(room, mid, ":tada:")).status_code == 204
    seen = history(server, user, room)[mid]["reactions"]
    assert seen == {THUMBS: sorted([zed.username, amy.username]), ":tada:": [amy.username]}
    for _ in range(2):
        assert call(server, zed, "DELETE", reaction_path(room, mid, THUMBS)).status_code == 204
    assert call(server, amy, "DELETE", reaction_path(room, mid, ":tada:")).status_code == 204
    assert history(server, user, room)[mid]["reactions"] == {THUMBS: [amy.username]}


def test_mentions_name_only_readers(server: Server) -> None:
    """`mentions` lists the `@username`s of the body who can read the room (any case,
    trailing punctuation ignored), not people outside a private room nor unknown names, nor
    e-mail addresses; an edit computes them again."""
    owner, inside, outside = server.register(), server.register(), server.register()
    r = call(server, owner, "POST", "/api/rooms", {"name": unique("priv-"), "kind": "private"})
    assert r.status_code == 201, r.text
    room = r.json()["name"]
    assert (
        call(server, owner, "PUT", f"/api/rooms/{room}/members/{inside.username}").status_code
        == 204
    )
    body = (
        f"@{inside.username.upper()}, @{outside.username} and @nobody-{unique()} "
        f"and mail me at x@{inside.username}"
    )
    message = say(server, owner, room, body)
    assert message["mentions"] == [inside.username]
    assert history(server, owner, room)[message["id"]]["mentions"] == [inside.username]
    r = call(server, owner, "PATCH", msg_path(room, message["id"]), {"body": f"@{owner.username}."})
    assert r.status_code == 200 and r.json()["mentions"] == [owner.username]
    assert history(server, owner, room)[message["id"]]["mentions"] == [owner.username]


@pytest.mark.parametrize(
    ("method", "suffix", "body", "status"),
    [
        ("PATCH", "", {"body": ""}, 422),
        ("PATCH", "", {"body": "x" * 4001}, 422),
        ("PATCH", "", {"text": "no body"}, 422),
        ("PATCH", "", {"body": 42}, 422),
        ("PUT", "/reactions/not-an-emoji", None, 422),
        ("PUT", "/reactions/" + quote("\N{THUMBS UP SIGN}" * 5), None, 422),
        ("PUT", "/reactions/" + quote(":" + "a" * 40 + ":"), None, 422),
        ("DELETE", "/reactions/ab", None, 422),
    ],
)
def test_bad_input_is_refused(
    server: Server, user: Account, room: str, method: str, suffix: str, body: Any, status: int
) -> None:
    """Malformed or oversized bodies and bad emoji get FastAPI's 422, and change nothing."""
    message = say(server, user, room, "unchanged")
    r = call(server, user, method, msg_path(room, message["id"]) + suffix, body)
    assert r.status_code == status, r.text
    assert history(server, user, room)[message["id"]] == message


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PATCH", "", {"body": "x"}),
        ("DELETE", "", None),
        ("PUT", f"/reactions/{quote(THUMBS)}", None),
        ("DELETE", f"/reactions/{quote(THUMBS)}", None),
    ],
)
def test_unknown_ids_unauthorized_and_hidden_rooms(
    server: Server, user: Account, room: str, method: str, suffix: str, body: Any
) -> None:
    """An unknown message id → 404; no token → 401; an id that is not a positive 64-bit
    integer → 422; a private room's non-member gets exactly what a missing room gives."""
    message = say(server, user, room, "here")
    assert call(server, user, method, msg_path(room, 10**9) + suffix, body).status_code == 404
    assert (
        call(server, None, method, msg_path(room, message["id"]) + suffix, body).status_code == 401
    )
    for bad in ("0", "x", str(2**63)):
        assert call(server, user, method, msg_path(room, bad) + suffix, body).status_code == 422
    stranger = server.register()
    r = call(server, user, "POST", "/api/rooms", {"name": unique("hid-"), "kind": "private"})
    hidden = r.json()["name"]
    secret = say(server, user, hidden, "secret")
    missing = "x" + hidden[1:]
    seen = call(server, stranger, method, msg_path(hidden, secret["id"]) + suffix, body)
    nothing = call(server, stranger, method, msg_path(missing, secret["id"]) + suffix, body)
    assert seen.status_code == nothing.status_code == 404
    assert seen.json() == nothing.json()
    assert history(server, user, hidden)[secret["id"]] == secret


def test_changes_are_rate_limited(make_server: Any) -> None:
    """Changes count against the user's message rate: past it, 429 with Retry-After."""
    srv: Server = make_server(rate_burst=3, rate_per_sec=0.01)
    amy = srv.register()
    room = srv.create_room(amy)
    message = say(srv, amy, room, "one")
    codes = [
        call(srv, amy, "PUT", reaction_path(room, message["id"], e)).status_code
        for e in (":a:", ":b:", ":c:")
    ]
    assert codes[0] == 204 and 429 in codes
    r = call(srv, amy, "PUT", reaction_path(room, message["id"], ":d:"))
    assert r.status_code == 429 and float(r.headers["Retry-After"]) > 0


def test_a_retried_nonce_gets_the_message_as_it_is_now(
    server: Server, user: Account, room: str
) -> None:
    """Posting again with the nonce of a message since edited, or deleted, stores nothing
    (200) and answers with the message as it is now."""
    with server.client() as http:
        first = post(http, user, room, "draft", nonce="retry-me")
        assert first.status_code == 201, first.text
        mid = first.json()["id"]
        r = call(server, user, "PATCH", msg_path(room, mid), {"body": "final"})
        assert r.status_code == 200, r.text
        again = post(http, user, room, "draft", nonce="retry-me")
        assert again.status_code == 200 and again.json()["body"] == "final"
        assert again.json()["edited_at"] == r.json()["edited_at"]
        assert call(server, user, "DELETE", msg_path(room, mid)).status_code == 204
        again = post(http, user, room, "draft", nonce="retry-me")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == mid and again.json()["deleted"] is True
    assert again.json()["body"] == ""
