"""The room WebSocket `/ws/rooms/{name}` against a real server."""

import contextlib
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from chat.closecodes import CloseCode
from chat.logs import RedactSecrets, redact
from tests.conftest import (
    Account,
    Server,
    make_settings,
    of_type,
    recv_until,
    unique,
)
from tests.ws_helpers import (
    StalledClient,
    busy,
    closed_with,
    frames_until,
    history,
    own_message,
    post,
    post_until_dropped,
    seed,
    send,
    signed,
    token_for,
    unsigned_token,
    welcome,
    with_bad_signature,
    with_claims,
)

CLOSE_POLICY = CloseCode.UNAUTHENTICATED
CLOSE_TOO_BIG = CloseCode.TOO_BIG
CLOSE_TOO_SLOW = CloseCode.TOO_SLOW
CLOSE_BAD_REQUEST = CloseCode.BAD_REQUEST
CLOSE_UNKNOWN_ROOM = CloseCode.NOT_FOUND
CLOSE_TOO_MANY = CloseCode.TOO_MANY
MESSAGE_KEYS = {
    "type",
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
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")

Message = dict[str, Any]
Seeded = tuple[Server, Account, str, list[Message]]


def path(room: str, query: str = "") -> str:
    return f"/ws/rooms/{room}" + (f"?{query}" if query else "")


def active_users(server: Server) -> dict[str, list[str]]:
    assert server.admin is not None
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.get("/api/admin/active-users", headers=server.admin.headers)
    assert r.status_code == 200, r.text
    return r.json()["rooms"]


def without_type(frame: Message) -> Message:
    return {k: v for k, v in frame.items() if k != "type"}


def assert_alone(
    server: Server, ws: ClientConnection, user: Account, room: str, nonce: str
) -> None:
    """Nobody joined `room` behind `user`'s back: its next frames hold no presence change,
    and the admin view lists only `user` there."""
    send(ws, {"type": "message", "body": "anyone here?", "nonce": nonce})
    frames = frames_until(ws, own_message(nonce))
    assert [f for f in frames if f["type"] == "presence" and f["user"] != user.username] == []
    assert active_users(server).get(room) == [user.username]


OpenSocket = Callable[..., ClientConnection]


@pytest.fixture
def sockets() -> Iterator[OpenSocket]:
    """Opens sockets (like `Server.ws`) that stay open until the test ends or closes them."""
    with contextlib.ExitStack() as stack:

        def open_socket(
            server: Server, path: str, account: Account | None = None, **kw: Any
        ) -> ClientConnection:
            return stack.enter_context(server.ws(path, account, **kw))

        yield open_socket


@dataclass
class Fast:
    """This module's own server, without a rate limit to speak of, and two of its users."""

    server: Server
    amy: Account
    zed: Account


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fast]:
    settings = make_settings(tmp_path_factory.mktemp("fast"), rate_burst=10**6, rate_per_sec=10**6)
    srv = Server(settings)
    srv.start()
    try:
        srv.admin = srv.register(unique("admin"))
        yield Fast(srv, srv.register(unique("amy")), srv.register(unique("zed")))
    finally:
        srv.stop()


# --- Chatting and presence -----------------------------------------------------------------


def test_two_users_chat_and_see_presence(server: Server) -> None:
    """Two users in a room get each other's messages (the sender's copy carrying its nonce) and
    presence join/leave with sorted users, while a user in another room receives none of it."""
    zed, amy, other = (
        server.register(unique("zed")),
        server.register(unique("amy")),
        server.register(),
    )
    room, elsewhere = server.create_room(zed), server.create_room(other)
    with server.ws(path(elsewhere), other) as wo:
        welcome(wo)
        with server.ws(path(room), zed) as wz:
            first = welcome(wz)
            assert (first["room"], first["user"], first["users"]) == (
                room,
                zed.username,
                [zed.username],
            )
            with server.ws(path(room), amy) as wa:
                assert welcome(wa)["users"] == [amy.username, zed.username]
                join = recv_until(wz, of_type("presence", event="join", user=amy.username))
                assert join["room"] == room
                assert join["users"] == [amy.username, zed.username]

                send(wa, {"type": "message", "body": "  hello zed  ", "nonce": "n-1"})
                mine = recv_until(wa, of_type("message"))
                theirs = recv_until(wz, of_type("message"))
                assert set(mine) == MESSAGE_KEYS
                assert mine["nonce"] == "n-1"
                assert (mine["user"], mine["room"], mine["body"]) == (
                    amy.username,
                    room,
                    "hello zed",
                )
                assert ISO_UTC.match(mine["ts"]), mine["ts"]
                assert {k: v for k, v in theirs.items() if k != "nonce"} == {
                    k: v for k, v in mine.items() if k != "nonce"
                }

                send(wz, {"type": "message", "body": "hi amy", "nonce": "n-2"})
                reply = recv_until(wa, of_type("message"))
                assert (reply["user"], reply["body"]) == (zed.username, "hi amy")
                assert reply["id"] > mine["id"]
                assert recv_until(wz, of_type("message"))["nonce"] == "n-2"
            leave = recv_until(wz, of_type("presence", event="leave", user=amy.username))
            assert (leave["room"], leave["users"]) == (room, [zed.username])
        # The user in the other room saw only its own room's frames.
        send(wo, {"type": "message", "body": "anyone?", "nonce": "o-1"})
        seen = frames_until(wo, own_message("o-1"))
        assert [(f["type"], f["room"]) for f in seen] == [
            ("presence", elsewhere),
            ("message", elsewhere),
        ]


def test_rest_message_is_delivered_to_sockets(server: Server) -> None:
    """A message POSTed over REST reaches the sockets connected to the room."""
    listener, poster = server.register(), server.register()
    room = server.create_room(poster)
    with server.ws(path(room), listener) as ws, httpx.Client(base_url=server.url) as http:
        welcome(ws)
        r = post(http, poster, room, "from a bot", nonce="bot-1")
        assert r.status_code == 201, r.text
        got = recv_until(ws, of_type("message"))
        assert without_type(got) == r.json()
        assert (got["user"], got["body"]) == (poster.username, "from a bot")


def test_two_tabs_count_once_and_leave_with_the_last(make_server: Any, sockets: OpenSocket) -> None:
    """A user with two tabs is present once, and leaves only when the last tab closes."""
    server = make_server()
    watcher, tabs = server.register(), server.register()
    room = server.create_room(watcher)
    both = sorted([watcher.username, tabs.username])
    with server.ws(path(room), watcher) as ww:
        welcome(ww)
        tab1 = sockets(server, path(room), tabs)
        welcome(tab1)
        recv_until(ww, of_type("presence", event="join", user=tabs.username))
        with server.ws(path(room), tabs) as tab2:
            assert welcome(tab2)["users"] == both
            # The second tab's arrival was announced (if at all) before its welcome, so it
            # would come before the watcher's own message.
            assert frames_before_own_message(ww, "w-1") == []
            assert active_users(server)[room] == both

            # Once the server has let go of the first tab, whatever its handler announced
            # is in the watcher's socket ahead of the watcher's next message.
            connections = server.open_connections()
            tab1.close()
            wait_until(lambda: server.open_connections() < connections, 5)
            assert frames_before_own_message(ww, "w-2") == []
            assert active_users(server)[room] == both
        # The control: the last tab's close is announced, through the same path.
        leave = recv_until(ww, of_type("presence", event="leave", user=tabs.username))
        assert leave["users"] == [watcher.username]
        assert frames_before_own_message(ww, "w-3") == []
        assert active_users(server)[room] == [watcher.username]


def frames_before_own_message(ws: ClientConnection, nonce: str) -> list[Message]:
    """Send a message; the frames that arrive before its acknowledgement."""
    send(ws, {"type": "message", "body": "marker", "nonce": nonce})
    return frames_until(ws, own_message(nonce))[:-1]


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_typing_goes_to_the_others_only(server: Server, sockets: OpenSocket) -> None:
    """A typing hint reaches the other users in the room but not the sender."""
    typist, reader = server.register(), server.register()
    room = server.create_room(typist)
    with server.ws(path(room), typist) as wt:
        welcome(wt)
        wr = sockets(server, path(room), reader)
        welcome(wr)
        recv_until(wt, of_type("presence", event="join", user=reader.username))
        send(wt, {"type": "typing"})
        assert recv_until(wr, of_type("typing")) == {
            "type": "typing",
            "room": room,
            "user": typist.username,
        }
        # The typing event was published before this message, so it would come first.
        send(wt, {"type": "message", "body": "done typing", "nonce": "t-1"})
        assert [f["type"] for f in frames_until(wt, own_message("t-1"))] == ["message"]


# --- Welcome, history and resume -----------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(fast: Fast) -> Seeded:
    """A room on the `fast` server holding 510 messages."""
    room = fast.server.create_room(fast.amy)
    return fast.server, fast.amy, room, seed(fast.server, fast.amy, room, 510)


def test_welcome_has_the_last_50_messages_oldest_first(seeded: Seeded) -> None:
    """The welcome's history is the room's last 50 messages, oldest first, not truncated."""
    srv, account, room, stored = seeded
    with srv.ws(path(room), account) as ws:
        w = welcome(ws)
    assert [m["id"] for m in w["history"]] == [m["id"] for m in stored[-50:]]
    assert w["history"] == stored[-50:]
    assert "truncated" not in w


def test_welcome_of_a_quiet_room(server: Server) -> None:
    """A room with fewer than 50 messages welcomes with all of them; an empty room with none."""
    account = server.register()
    room, empty = server.create_room(account), server.create_room(account)
    with httpx.Client(base_url=server.url) as http:
        stored = [post(http, account, room, f"m{i}").json() for i in range(3)]
    with server.ws(path(room), account) as ws:
        assert welcome(ws)["history"] == stored
    with server.ws(path(empty), account) as ws:
        assert welcome(ws)["history"] == []


@pytest.mark.parametrize("missed", [0, 1, 3, 500])
def test_since_resumes_exactly_after_the_id(seeded: Seeded, missed: int) -> None:
    """`?since=ID` welcomes with exactly the messages after ID, up to 500 of them untruncated."""
    srv, account, room, stored = seeded
    since = stored[-missed - 1]["id"]
    with srv.ws(path(room, f"since={since}"), account) as ws:
        w = welcome(ws)
    assert w["history"] == (stored[-missed:] if missed else [])
    assert "truncated" not in w


@pytest.mark.parametrize("missed", [501, 510])
def test_since_with_more_than_500_missed_is_truncated(seeded: Seeded, missed: int) -> None:
    """With more than 500 messages missed, the welcome holds the newest 500 and `truncated`."""
    srv, account, room, stored = seeded
    since = stored[-missed - 1]["id"] if missed < len(stored) else 0
    with srv.ws(path(room, f"since={since}"), account) as ws:
        w = welcome(ws)
    assert w["truncated"] is True
    assert w["history"] == stored[-500:]


def test_resumed_socket_gets_live_messages_once(seeded: Seeded) -> None:
    """After resuming, the socket receives new messages live, none twice."""
    srv, account, room, stored = seeded
    with srv.ws(path(room, f"since={stored[-2]['id']}"), account) as ws:
        assert welcome(ws)["history"] == stored[-1:]
        send(ws, {"type": "message", "body": "back again", "nonce": "r-1"})
        frames = frames_until(ws, own_message("r-1"))
        assert [f["type"] for f in frames] == ["presence", "message"]
        assert frames[-1]["id"] > stored[-1]["id"]


def test_joining_a_busy_room_gets_each_message_once(fast: Fast) -> None:
    """Sockets joining while messages keep arriving get every message exactly once and in
    order, across the welcome's history and the live frames after it."""
    server = fast.server
    room = server.create_room(fast.amy)
    seen: list[list[int]] = []
    with busy(server, fast.zed, room) as posted:
        for _ in range(15):
            with server.ws(path(room), fast.amy) as ws:
                ids = [m["id"] for m in welcome(ws)["history"]]
                ids += [recv_until(ws, of_type("message"))["id"] for _ in range(3)]
            seen.append(ids)
    for ids in seen:
        assert ids == [i for i in posted if ids[0] <= i <= ids[-1]], "missed or repeated"


def test_overflow_during_welcome_closes_1013(make_server: Any) -> None:
    """A socket whose tiny send queue overflows, even while it is being welcomed, is closed
    with 1013 and never left open with a message missing."""
    srv = make_server(rate_burst=10**6, rate_per_sec=10**6, send_queue_max=1)
    reader, poster = srv.register(), srv.register()
    room = srv.create_room(reader)
    survivors: list[list[int]] = []
    with busy(srv, poster, room, threads=2) as posted:
        for _ in range(25):
            with srv.ws(path(room), reader) as ws:
                try:
                    # The queue may overflow before the welcome is sent: 1013 then, no welcome.
                    ids = [m["id"] for m in welcome(ws)["history"]]
                    ids += [recv_until(ws, of_type("message"))["id"] for _ in range(5)]
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None
                    assert closed.rcvd.code == CLOSE_TOO_SLOW
                else:
                    survivors.append(ids)
    for ids in survivors:
        assert ids == [i for i in posted if ids[0] <= i <= ids[-1]], "open with a gap"


# --- Nonces ----------------------------------------------------------------------------------


def test_ws_nonce_is_stored_once(server: Server, sockets: OpenSocket) -> None:
    """The same nonce from the same user is acknowledged again with the same message and stored
    once; the others see it once; another user's equal nonce is a message of its own."""
    sender, other = server.register(), server.register()
    room = server.create_room(sender)
    with server.ws(path(room), sender) as ws:
        welcome(ws)
        wo = sockets(server, path(room), other)
        welcome(wo)
        send(ws, {"type": "message", "body": "once", "nonce": "same"})
        first = recv_until(ws, own_message("same"))
        assert recv_until(wo, of_type("message"))["id"] == first["id"]

        send(ws, {"type": "message", "body": "once, retried", "nonce": "same"})
        assert recv_until(ws, own_message("same")) == first

        send(wo, {"type": "message", "body": "mine", "nonce": "same"})
        seen = [f for f in frames_until(wo, own_message("same")) if f["type"] == "message"]
        assert len(seen) == 1, f"the retry must not reach the others: {seen}"
        assert seen[0]["id"] > first["id"]
        assert seen[0]["user"] == other.username
    stored = history(server, sender, room)
    assert [(m["user"], m["body"]) for m in stored] == [
        (sender.username, "once"),
        (other.username, "mine"),
    ]


def test_rest_nonce_is_stored_once(server: Server) -> None:
    """A repeated nonce over REST answers 200 with the first message (201 the first time), and
    the same nonce over the WebSocket is that message too."""
    account = server.register()
    room = server.create_room(account)
    with httpx.Client(base_url=server.url) as http:
        first = post(http, account, room, "hello", nonce="rest-1")
        assert first.status_code == 201, first.text
        again = post(http, account, room, "hello again", nonce="rest-1")
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
    with server.ws(path(room), account) as ws:
        welcome(ws)
        send(ws, {"type": "message", "body": "hello via ws", "nonce": "rest-1"})
        assert without_type(recv_until(ws, own_message("rest-1"))) == first.json()
    assert history(server, account, room) == [first.json()]


# --- Authentication and origins ------------------------------------------------------------

REFUSALS = [
    "missing token",
    "garbage token",
    "garbage bearer",
    "empty bearer",
    "expired token",
    "tampered signature",
    "tampered claims",
    "alg none",
    "other key",
    "no iat",
    "issued in the future",
    "unknown user",
    "foreign origin, bearer",
    "foreign origin, query",
    "foreign origin, cookie",
    "other port origin, cookie",
    "null origin, cookie",
]


def refusal(server: Server, account: Account, case: str) -> dict[str, Any]:
    """Keyword arguments of `Server.ws` asking for a socket in a way that must be refused."""
    assert server.admin is not None
    key, now, valid = server.settings.signing_key(), int(time.time()), account.token
    sub, tkey = str(account.id), account.token_key
    cookie = {"Cookie": f"access_token={valid}"}
    cases: dict[str, dict[str, Any]] = {
        "missing token": {},
        "garbage token": {"token": "not-a-jwt"},
        "garbage bearer": {"headers": {"Authorization": "Bearer not.a.jwt"}},
        "empty bearer": {"headers": {"Authorization": "Bearer "}},
        "expired token": {"token": token_for(server, account, timedelta(seconds=-5))},
        "tampered signature": {"token": with_bad_signature(valid)},
        "tampered claims": {"token": with_claims(valid, sub=str(server.admin.id))},
        "alg none": {"token": unsigned_token(account.id)},
        "other key": {"token": token_for(server, account, timedelta(minutes=5), "k" * 48)},
        "no iat": {"token": signed(key, sub=sub, tkey=tkey, exp=now + 300)},
        "issued in the future": {
            "token": signed(key, sub=sub, tkey=tkey, iat=now + 3600, exp=now + 7200)
        },
        "unknown user": {"token": signed(key, sub="999999999", tkey=tkey, iat=now, exp=now + 300)},
        "foreign origin, bearer": {
            "headers": {"Origin": "http://evil.example", "Authorization": f"Bearer {valid}"}
        },
        "foreign origin, query": {"headers": {"Origin": "https://evil.example"}, "token": valid},
        "foreign origin, cookie": {"headers": {"Origin": "http://evil.example", **cookie}},
        "other port origin, cookie": {
            "headers": {"Origin": f"http://127.0.0.1:{server.port + 1}", **cookie}
        },
        "null origin, cookie": {"headers": {"Origin": "null", **cookie}},
    }
    return cases[case]


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_socket_is_closed_1008_and_never_present(fast: Fast, case: str) -> None:
    """A socket without a valid token, or from a foreign origin, is closed with 1008 and a
    reason, and its user never appears as active."""
    server, watcher, account = fast.server, fast.zed, fast.amy
    room = server.create_room(watcher)
    with server.ws(path(room), watcher) as ww:
        welcome(ww)
        with server.ws(path(room), **refusal(server, account, case)) as ws:
            close = closed_with(ws)
        assert close.code == CLOSE_POLICY
        assert close.reason
        assert_alone(server, ww, watcher, room, "alone")


@pytest.mark.parametrize("transport", ["query", "bearer", "cookie"])
def test_token_transports(fast: Fast, transport: str) -> None:
    """The token is accepted from `?token=`, an `Authorization: Bearer` header or the cookie."""
    server, account = fast.server, fast.amy
    room = server.create_room(account)
    kwargs: dict[str, Any] = {
        "query": {"token": account.token},
        "bearer": {"headers": {"Authorization": f"Bearer {account.token}"}},
        "cookie": {"headers": {"Cookie": f"access_token={account.token}"}},
    }[transport]
    with server.ws(path(room), **kwargs) as ws:
        w = welcome(ws)
    assert (w["user"], w["users"]) == (account.username, [account.username])


def test_same_origin_is_accepted(fast: Fast) -> None:
    """A browser on the server's own origin (any scheme) may open a socket with its cookie."""
    server, account = fast.server, fast.amy
    room = server.create_room(account)
    cookie = {"Cookie": f"access_token={account.token}"}
    for origin in (server.url, f"https://127.0.0.1:{server.port}", f"{server.url}/"):
        with server.ws(path(room), headers={"Origin": origin, **cookie}) as ws:
            assert welcome(ws)["user"] == account.username


def test_allowed_origins_setting(make_server: Any) -> None:
    """An origin listed in CHAT_ALLOWED_ORIGINS is accepted, look-alikes are still refused."""
    srv = make_server(allowed_origins=["https://chat.example.com", "http://localhost:3000"])
    account = srv.register()
    room = srv.create_room(account)
    cookie = {"Cookie": f"access_token={account.token}"}
    for origin in ("https://chat.example.com", "http://localhost:3000", srv.url):
        with srv.ws(path(room), headers={"Origin": origin, **cookie}) as ws:
            assert welcome(ws)["user"] == account.username
    for origin in (
        "http://chat.example.com",
        "https://chat.example.com.evil.io",
        "https://evil.example.com",
        "http://localhost:3001",
    ):
        with srv.ws(path(room), headers={"Origin": origin, **cookie}) as ws:
            assert closed_with(ws).code == CLOSE_POLICY, origin


def test_unknown_room_is_closed_4404(fast: Fast) -> None:
    """A socket for a room that does not exist is closed with 4404."""
    server, account = fast.server, fast.amy
    with server.ws(path(unique("no-such-room-")), account) as ws:
        assert closed_with(ws).code == CLOSE_UNKNOWN_ROOM


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "", "0x10", "9" * 19])
def test_bad_since_is_closed_4400(fast: Fast, since: str) -> None:
    """A `since` that is not a message id closes the socket with 4400 before anyone sees it."""
    server, watcher, account = fast.server, fast.zed, fast.amy
    room = server.create_room(watcher)
    with server.ws(path(room), watcher) as ww:
        welcome(ww)
        with server.ws(path(room, f"since={since}"), account) as ws:
            assert closed_with(ws).code == CLOSE_BAD_REQUEST
        assert_alone(server, ww, watcher, room, "alone")


def test_token_expiring_while_connected_closes_1008(server: Server) -> None:
    """A socket whose token expires while it is open is closed with 1008 and its user leaves."""
    account, watcher = server.register(), server.register()
    room = server.create_room(watcher)
    short = token_for(server, account, timedelta(seconds=2))
    with server.ws(path(room), watcher) as ww:
        welcome(ww)
        with server.ws(path(room), token=short) as ws:
            welcome(ws)
            send(ws, {"type": "message", "body": "still valid", "nonce": "e-1"})
            recv_until(ws, own_message("e-1"))
            close = closed_with(ws, timeout=5)
            assert close.code == CLOSE_POLICY
            assert close.reason
        leave = recv_until(ww, of_type("presence", event="leave", user=account.username))
        assert leave["users"] == [watcher.username]


def test_query_token_never_logged(server: Server) -> None:
    """Tokens passed in `?token=` are redacted from every configured log handler's output."""
    account = server.register()
    room = server.create_room(account)
    bogus = "bogus-secret-" + unique()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.access", "chat")]
    # The handlers chat.logs.log_config configured, not the ones pytest adds.
    handlers = {h for lg in loggers for h in lg.handlers if h.name in ("default", "access")}
    assert {h.name for h in handlers} == {"default", "access"}
    for handler in handlers:
        assert any(isinstance(f, RedactSecrets) for f in handler.filters), handler
    streams = [h for h in handlers if isinstance(h, logging.StreamHandler)]
    buffer = io.StringIO()
    old_streams = [h.setStream(buffer) for h in streams]
    chatty = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn.access", "chat")]
    old_levels = [lg.level for lg in chatty]
    try:
        for lg in chatty:
            lg.setLevel(logging.INFO)
        with server.ws(path(room), token=account.token) as ws:
            welcome(ws)
        with server.ws(path(room), token=bogus) as ws:
            assert closed_with(ws).code == CLOSE_POLICY
        with httpx.Client(base_url=server.url) as http:
            http.get(f"/api/rooms?token={account.token}", headers=account.headers)
    finally:
        for lg, level in zip(chatty, old_levels, strict=True):
            lg.setLevel(level)
        for h, old in zip(streams, old_streams, strict=True):
            h.setStream(old)  # type: ignore[arg-type]
    output = buffer.getvalue()
    assert f"/ws/rooms/{room}" in output, output  # the lines were written ...
    assert "token=[redacted]" in output
    assert account.token not in output  # ... without the tokens
    assert account.token.split(".")[2] not in output
    assert bogus not in output


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/ws/rooms/a?token=abc.def-ghi", "/ws/rooms/a?token=[redacted]"),
        ("/ws/rooms/a?since=4&token=abc&x=1", "/ws/rooms/a?since=4&token=[redacted]&x=1"),
        ("GET /x?access_token=s3cr3t HTTP/1.1", "GET /x?access_token=[redacted] HTTP/1.1"),
        ("/login?password=hunter2", "/login?password=[redacted]"),
        ("/ws/rooms/a?TOKEN=abc", "/ws/rooms/a?TOKEN=[redacted]"),
        ("/ws/rooms/a?since=4", "/ws/rooms/a?since=4"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    """`chat.logs.redact` hides token and password values and leaves the rest alone."""
    assert redact(line) == expected


# --- Bad frames and abuse ------------------------------------------------------------------

BAD_FRAMES: dict[str, tuple[str | bytes | Message, str]] = {
    "not json": ("{nope", "invalid_json"),
    "cut-off json": ('{"type": "message", "body": "x"', "invalid_json"),
    "array": ('[{"type": "message", "body": "x"}]', "invalid_message"),
    "string": ('"message"', "invalid_message"),
    "null": ("null", "invalid_message"),
    "number": ("42", "invalid_message"),
    "binary frame": (b'{"type": "message", "body": "x"}', "invalid_message"),
    "unknown type": ({"type": "shout", "body": "x"}, "invalid_message"),
    "missing type": ({"body": "x"}, "invalid_message"),
    "missing body": ({"type": "message"}, "invalid_message"),
    "body a number": ({"type": "message", "body": 42}, "invalid_message"),
    "body a list": ({"type": "message", "body": ["x"]}, "invalid_message"),
    "body null": ({"type": "message", "body": None}, "invalid_message"),
    "empty body": ({"type": "message", "body": ""}, "invalid_message"),
    "blank body": ({"type": "message", "body": " \n\t "}, "invalid_message"),
    "nonce a number": ({"type": "message", "body": "x", "nonce": 7}, "invalid_message"),
    "nonce a list": ({"type": "message", "body": "x", "nonce": ["n"]}, "invalid_message"),
    "empty nonce": ({"type": "message", "body": "x", "nonce": ""}, "invalid_message"),
    "nonce of 65": ({"type": "message", "body": "x", "nonce": "n" * 65}, "invalid_message"),
    "body of 4001": ({"type": "message", "body": "b" * 4001}, "too_large"),
    "body of 4001 trimmed": ({"type": "message", "body": f"  {'b' * 4001}\n"}, "too_large"),
}


def send_raw(ws: ClientConnection, frame: str | bytes | Message) -> None:
    ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))


# Refused frames that carry a valid nonce: the error repeats it.
BAD_FRAMES_WITH_NONCE: dict[str, tuple[Message, str]] = {
    "body a number": ({"type": "message", "body": 42, "nonce": "n-1"}, "invalid_message"),
    "missing body": ({"type": "message", "nonce": "n-1"}, "invalid_message"),
    "blank body": ({"type": "message", "body": " \n ", "nonce": "n-1"}, "invalid_message"),
    "body of 4001": ({"type": "message", "body": "b" * 4001, "nonce": "n-1"}, "too_large"),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES_WITH_NONCE))
def test_error_repeats_the_refused_frames_nonce(fast: Fast, case: str) -> None:
    """An error about a frame that carried a nonce repeats it, so that the client knows which
    message was refused; an invalid nonce is never echoed."""
    frame, code = BAD_FRAMES_WITH_NONCE[case]
    server, account = fast.server, fast.amy
    room = server.create_room(account)
    with server.ws(path(room), account) as ws:
        welcome(ws)
        send(ws, frame)
        assert recv_until(ws, of_type("error")) == {
            "type": "error",
            "code": code,
            "detail": ANY_TEXT,
            "nonce": "n-1",
        }
        send(ws, {**frame, "nonce": "n" * 65})
        assert "nonce" not in recv_until(ws, of_type("error"))
    assert history(server, account, room) == []


class _AnyText(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_TEXT = _AnyText()


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frame_gets_error_and_stores_nothing(fast: Fast, case: str) -> None:
    """A bad frame is answered with an error frame of its kind; the connection stays open and
    nothing is stored."""
    frame, code = BAD_FRAMES[case]
    server, account = fast.server, fast.amy
    room = server.create_room(account)
    with server.ws(path(room), account) as ws:
        welcome(ws)
        send_raw(ws, frame)
        error = recv_until(ws, of_type("error"))
        assert error["code"] == code
        assert isinstance(error["detail"], str) and error["detail"]
        assert set(error) == {"type", "code", "detail"}
        send(ws, {"type": "message", "body": "a good one", "nonce": "good"})
        ack = recv_until(ws, own_message("good"))
    assert history(server, account, room) == [without_type(ack)]


def test_limits_are_inclusive(fast: Fast) -> None:
    """A body of 4000 characters after trimming and a nonce of 64 characters are accepted."""
    server, account = fast.server, fast.amy
    room = server.create_room(account)
    body, nonce = "é" * 4000, "n" * 64
    with server.ws(path(room), account) as ws:
        welcome(ws)
        send(ws, {"type": "message", "body": f"\n  {body}  ", "nonce": nonce})
        ack = recv_until(ws, of_type("message"))
    assert (ack["body"], ack["nonce"]) == (body, nonce)
    assert history(server, account, room) == [without_type(ack)]


def test_rate_limited(make_server: Any) -> None:
    """Past the burst a user's messages are refused with `rate_limited` (over REST with 429) and
    not stored; the socket stays open and other users keep their own allowance."""
    srv = make_server(rate_burst=3, rate_per_sec=0.1)
    account, other = srv.register(), srv.register()
    room = srv.create_room(account)
    with srv.ws(path(room), account) as ws, httpx.Client(base_url=srv.url) as http:
        welcome(ws)
        for i in range(3):
            send(ws, {"type": "message", "body": f"m{i}", "nonce": f"n{i}"})
            recv_until(ws, own_message(f"n{i}"))
        send(ws, {"type": "message", "body": "one too many", "nonce": "n3"})
        error = recv_until(ws, of_type("error"))
        assert (error["code"], error["nonce"]) == ("rate_limited", "n3")
        # 0.1 messages/s: the next one is allowed in 10 s at most.
        assert 0 < error["retry_after"] <= 10
        r = post(http, account, room, "over rest")
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        send_raw(ws, "{nope")
        assert recv_until(ws, of_type("error"))["code"] == "invalid_json"
        r = post(http, other, room, "my own bucket")
        assert r.status_code == 201, r.text
    assert [m["body"] for m in history(srv, account, room)] == ["m0", "m1", "m2", "my own bucket"]


def test_persistent_abuse_closes_4429_and_spares_the_others(
    server: Server, sockets: OpenSocket
) -> None:
    """Bad frames up to the abuse limit keep the socket open, one more closes it with 4429 (not
    1008, which would send a browser to the sign-in page), and
    the other users in the room see none of it but the abuser leaving."""
    limit = server.settings.abuse_max_errors
    abuser, bystander = server.register(), server.register()
    room = server.create_room(bystander)
    with server.ws(path(room), bystander) as wb:
        welcome(wb)
        wa = sockets(server, path(room), abuser)
        welcome(wa)
        for _ in range(limit):
            send_raw(wa, "{nope")
        for _ in range(limit):
            assert recv_until(wa, of_type("error"))["code"] == "invalid_json"
        send(wa, {"type": "message", "body": "still here", "nonce": "a-1"})
        recv_until(wa, own_message("a-1"))
        send(wa, {"type": "nonsense"})
        close = closed_with(wa)
        assert close.code == CLOSE_TOO_MANY

        frames = frames_until(wb, of_type("presence", event="leave", user=abuser.username))
        # The bystander's join; the abuser becoming a member, joining; its message; it leaving.
        kinds = ["presence", "member", "presence", "message", "presence"]
        assert [f["type"] for f in frames] == kinds
        send(wb, {"type": "message", "body": "all quiet", "nonce": "b-1"})
        assert recv_until(wb, own_message("b-1"))["body"] == "all quiet"
    assert [m["body"] for m in history(server, bystander, room)] == ["still here", "all quiet"]


def test_frame_over_64k_closes_1009(server: Server, sockets: OpenSocket) -> None:
    """A frame over 64 KiB closes the socket with 1009 and leaves the others connected."""
    account, bystander = server.register(), server.register()
    room = server.create_room(bystander)
    with server.ws(path(room), bystander) as wb:
        welcome(wb)
        ws = sockets(server, path(room), account)
        welcome(ws)
        body = "x" * (64 * 1024)
        # The server may close before the client has sent it all.
        with contextlib.suppress(ConnectionClosed):
            send(ws, {"type": "message", "body": body})
        assert closed_with(ws).code == CLOSE_TOO_BIG
        recv_until(wb, of_type("presence", event="leave", user=account.username))
        send(wb, {"type": "message", "body": "fine", "nonce": "b-1"})
        recv_until(wb, own_message("b-1"))
    assert [m["body"] for m in history(server, bystander, room)] == ["fine"]


# --- Capacity ------------------------------------------------------------------------------


def test_max_connections_per_user(make_server: Any) -> None:
    """A user's socket beyond max_connections_per_user is closed with 4429, across rooms, and
    one is allowed again once another closes."""
    srv = make_server(max_connections_per_user=2)
    account, other = srv.register(), srv.register()
    room, second = srv.create_room(account), srv.create_room(account)
    with srv.ws(path(room), account) as tab1, srv.ws(path(second), account) as tab2:
        welcome(tab1)
        welcome(tab2)
        with srv.ws(path(room), account) as tab3:
            close = closed_with(tab3)
            assert close.code == CLOSE_TOO_MANY
            assert close.reason
        with srv.ws(path(room), other) as wo:
            assert welcome(wo)["users"] == sorted([account.username, other.username])
        tab1.close()
        deadline = time.monotonic() + 3
        while True:  # The server forgets tab1 a moment after its close handshake.
            with srv.ws(path(room), account) as tab3:
                try:
                    welcome(tab3)
                    break
                except ConnectionClosed:
                    assert time.monotonic() < deadline, "the closed tab still counts"
                    time.sleep(0.05)


def test_slow_consumer_is_dropped_1013(make_server: Any) -> None:
    """A client that does not read is dropped once its send buffer overflows, after a
    gap-free prefix of the room's messages, while a reading client gets them all in order.
    The connection is aborted: its close frame (1013) could only follow the buffer."""
    srv = make_server(rate_burst=10_000, rate_per_sec=10_000, send_queue_max=4)
    reader, slow, poster = srv.register(), srv.register(), srv.register()
    room = srv.create_room(reader)
    body = "\N{GRINNING FACE}" * 4000  # 16 kB a frame fills the socket buffers quickly
    with srv.ws(path(room), reader) as wr, httpx.Client(base_url=srv.url, timeout=15) as http:
        welcome(wr)
        stalled = StalledClient(srv, path(room), slow)
        try:
            recv_until(wr, of_type("presence", event="join", user=slow.username))
            posted, received = post_until_dropped(http, poster, room, body, wr, slow.username)
            kept, code = stalled.read_until_closed()
        finally:
            stalled.close()
        # The reader keeps receiving after the slow client is gone.
        r = post(http, poster, room, "after")
        posted.append(r.json()["id"])
        received.append(recv_until(wr, of_type("message")))
    assert code is None
    assert [f["id"] for f in received if f["type"] == "message"] == posted
    assert kept[0]["type"] == "welcome"
    got = [f["id"] for f in kept if f["type"] == "message"]
    assert got == posted[: len(got)], "the slow client's messages have a gap or are out of order"
    assert len(got) < len(posted)
