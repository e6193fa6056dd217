"""Sockets admitted a few at a time (`CHAT_WS_ADMISSIONS_AT_ONCE`): every way out of an
admission gives its place back, and sockets waiting for a place all get in."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from chat.closecodes import CloseCode
from tests.conftest import Server
from tests.ws_helpers import closed_with, send, welcome


def test_every_refusal_gives_its_place_back(make_server: Callable[..., Server]) -> None:
    # One place: a refusal that kept it would leave every later socket waiting forever.
    server = make_server(ws_admissions_at_once=1, max_connections_per_user=2)
    owner, other = server.register(), server.register()
    room = server.create_room(owner)
    private = "p-" + room
    with server.client() as http:
        r = http.post(
            "/api/rooms", json={"name": private, "kind": "private"}, headers=owner.headers
        )
        assert r.status_code == 201, r.text
    refusals = [
        (lambda: server.ws(f"/ws/rooms/{room}"), CloseCode.UNAUTHENTICATED),
        (lambda: server.ws(f"/ws/rooms/{room}", token="not-a-token"), CloseCode.UNAUTHENTICATED),
        (lambda: server.ws("/ws/rooms/no-such-room", other), CloseCode.NOT_FOUND),
        (lambda: server.ws(f"/ws/rooms/{private}", other), CloseCode.NOT_FOUND),
        (lambda: server.ws(f"/ws/rooms/{room}?since=x", other), CloseCode.BAD_REQUEST),
        (lambda: server.ws("/ws/me"), CloseCode.UNAUTHENTICATED),
    ]
    for _ in range(2):
        for open_socket, code in refusals:
            with open_socket() as ws:
                assert closed_with(ws).code == code
    # The user's two sockets, then one too many; then a socket still gets in.
    with server.ws(f"/ws/rooms/{room}", other) as a, server.ws("/ws/me", other) as b:
        welcome(a)
        assert b.recv(timeout=5)
        with server.ws(f"/ws/rooms/{room}", other) as c:
            assert closed_with(c).code == CloseCode.TOO_MANY
    with server.ws(f"/ws/rooms/{room}", owner) as ws:
        assert welcome(ws)["room"] == room
        send(ws, {"type": "message", "body": "still open", "nonce": "n1"})


def test_sockets_waiting_for_a_place_all_get_in(make_server: Callable[..., Server]) -> None:
    server = make_server(ws_admissions_at_once=2)
    users = [server.register() for _ in range(5)]
    room = server.create_room(users[0])

    def visit(index: int) -> str:
        with server.ws(f"/ws/rooms/{room}", users[index % len(users)]) as ws:
            return str(welcome(ws, timeout=15)["user"])

    with ThreadPoolExecutor(40) as pool:
        seen = list(pool.map(visit, range(40)))
    assert seen == [users[i % len(users)].username for i in range(40)]
