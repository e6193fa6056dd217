"""Random interleavings of posts, edits, deletions, reactions, disconnections and resumptions
on one server: every client ends with exactly the database's state (SPEC "Message
lifecycle": every change reaches the room's sockets, and is never lost on resume)."""

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection

from tests.conftest import Account, Server, make_settings, recv, unique

EMOJI = ["\N{THUMBS UP SIGN}", ":tada:"]
Frame = dict[str, Any]


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own whose rate limits the examples never reach."""
    srv = Server(
        make_settings(tmp_path_factory.mktemp("property"), rate_burst=10**6, rate_per_sec=10**6)
    )
    srv.start()
    srv.admin = srv.register(unique("admin"))
    yield srv
    srv.stop()


class Client:
    """A socket's view of the room, built only from what it received."""

    def __init__(self, server: Server, account: Account, room: str) -> None:
        self.server, self.account, self.room = server, account, room
        self.state: dict[int, Frame] = {}
        self.ws: ClientConnection | None = None
        self.connect(None)

    def connect(self, since: int | None) -> None:
        path = f"/ws/rooms/{self.room}" + ("" if since is None else f"?since={since}")
        self.ws = self.server.ws(path, self.account).__enter__()
        hello = recv(self.ws)
        assert hello["type"] == "welcome", hello
        updates = hello.get("updates", [])
        ids = [u["id"] for u in updates]
        assert len(ids) == len(set(ids)), "each changed message once"
        assert all(since is not None and i <= since for i in ids)
        for message in [*hello["history"], *updates]:
            self.state[message["id"]] = message

    def apply(self, frame: Frame) -> None:
        if frame["type"] == "message":
            self.state[frame["id"]] = {k: v for k, v in frame.items() if k != "type"}
        elif frame["type"] == "update":
            self.state[frame["message"]["id"]] = frame["message"]

    def drain(self) -> None:
        """Take whatever has arrived so far, without waiting: a prefix of the room's events."""
        assert self.ws is not None
        with contextlib.suppress(TimeoutError):
            while True:
                self.apply(recv(self.ws, 0.02))

    def disconnect(self) -> None:
        if self.ws is not None:
            self.drain()
            self.ws.close()
            self.ws = None

    def resume(self) -> None:
        if self.ws is None:
            self.connect(max(self.state, default=0))

    def read_until(self, message_id: int) -> None:
        if self.ws is None:
            self.resume()
        assert self.ws is not None
        # The room's events come in sequence order: every change before the message first.
        while message_id not in self.state:
            self.apply(recv(self.ws))


users = st.sampled_from([0, 1])
targets = st.integers(min_value=0, max_value=9)
operations = st.one_of(
    st.tuples(st.just("post"), users, st.booleans()),
    st.tuples(st.just("edit"), users, targets, st.booleans()),
    st.tuples(st.just("delete"), users, targets),
    st.tuples(st.just("react"), users, targets, st.sampled_from(EMOJI), st.booleans()),
    st.tuples(st.just("disconnect"), users),
    st.tuples(st.just("resume"), users),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# A change made while a client is away, which it must find in its resume's `updates`.
@example(steps=[("post", 0, False), ("disconnect", 1), ("react", 0, 0, ":tada:", True)])
@given(steps=st.lists(operations, min_size=4, max_size=30))
def test_every_client_ends_with_the_database_state(
    quick_server: Server, steps: list[tuple[Any, ...]]
) -> None:
    """Whatever the interleaving of posts, edits, deletions, reactions (added and taken
    back), disconnections and resumptions with `?since=`, each client's messages, built
    only from its welcomes (history and updates) and the frames it received, equal REST
    history exactly; a resume never lists a message twice."""
    server = quick_server
    people = [server.register(), server.register()]
    room = server.create_room(people[0])
    clients = [Client(server, account, room) for account in people]
    posted: list[int] = []
    base = f"/api/rooms/{room}/messages"
    with server.client() as http:

        def call(who: int, method: str, path: str, body: Any = None) -> httpx.Response:
            return http.request(method, path, json=body, headers=people[who].headers)

        for step in steps:
            kind, who = step[0], step[1]
            if kind == "post":
                mention = f" @{people[1 - who].username}" if step[2] else ""
                r = call(who, "POST", base, {"body": f"p{len(posted)}{mention}"})
                assert r.status_code == 201, r.text
                posted.append(r.json()["id"])
            elif kind in ("disconnect", "resume"):
                getattr(clients[who], kind)()
            elif posted:
                target = posted[step[2] % len(posted)]
                if kind == "edit":
                    mention = f" @{people[1 - who].username}" if step[3] else ""
                    r = call(who, "PATCH", f"{base}/{target}", {"body": f"e{mention}"})
                    assert r.status_code in (200, 403, 404), r.text
                elif kind == "delete":
                    r = call(who, "DELETE", f"{base}/{target}")
                    assert r.status_code in (204, 403, 404), r.text
                else:
                    method = "PUT" if step[4] else "DELETE"
                    r = call(who, method, f"{base}/{target}/reactions/{quote(step[3])}")
                    assert r.status_code in (204, 404), r.text
        r = call(0, "POST", base, {"body": "the end"})
        assert r.status_code == 201, r.text
        final = r.json()["id"]
        r = call(0, "GET", f"{base}?limit=200")
        truth = {m["id"]: m for m in r.json()["messages"]}
    try:
        for client in clients:
            client.read_until(final)
            assert client.state == truth
    finally:
        for client in clients:
            client.disconnect()
