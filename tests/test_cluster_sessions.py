"""Ending a session on one process closes its sockets on the other: the two-process
PostgreSQL + Redis cluster of `test_cluster`."""

import time
from collections.abc import Callable
from dataclasses import replace

import httpx

from tests.conftest import PASSWORD, Account, recv
from tests.test_cluster import Cluster, Node, make_cluster
from tests.ws_helpers import closed_with

__all__ = ["make_cluster"]

NEW_PASSWORD = "a brand new passphrase"


def new_session(node: Node, account: Account) -> Account:
    with httpx.Client(base_url=node.url, timeout=15) as http:
        r = http.post("/api/auth/token", data={"username": account.username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return replace(account, token=r.json()["access_token"])


def rooms_status(node: Node, account: Account) -> int:
    with httpx.Client(base_url=node.url, timeout=15) as http:
        return http.get("/api/rooms", headers=account.headers).status_code


def test_ending_a_session_closes_its_sockets_on_every_process(
    make_cluster: Callable[..., Cluster],
) -> None:
    """DELETE /api/me/sessions/{id} on process 1 closes that session's room socket and admin
    view on process 2 within a second (1008), and its REST calls there get 401; a password
    change on process 1 does the same to every other session; the caller's session keeps
    its socket on process 2 (control)."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    assert cluster.admin is not None
    caller = cluster.admin
    ended, other = new_session(p1, caller), new_session(p2, caller)
    room = cluster.create_room(p1, caller)
    view = cluster.ws(p2, "/ws/admin", ended)
    assert recv(view)["type"] == "stats"
    doomed = cluster.join(p2, ended, room)
    theirs = cluster.join(p2, other, room)
    mine = cluster.join(p2, caller, room)

    with httpx.Client(base_url=p1.url, headers=caller.headers, timeout=15) as http:
        assert http.delete(f"/api/me/sessions/{ended.sid}").status_code == 204
        started = time.monotonic()
        assert closed_with(view, timeout=2).code == 1008
        assert closed_with(doomed.ws, timeout=2).code == 1008
        assert time.monotonic() - started < 1.0
        assert rooms_status(p2, ended) == 401
        assert theirs.send("the other session lives on")["user"] == caller.username

        body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        assert http.post("/api/me/password", json=body).status_code == 204
        started = time.monotonic()
        assert closed_with(theirs.ws, timeout=2).code == 1008
        assert time.monotonic() - started < 1.0
    assert rooms_status(p2, other) == 401
    assert mine.send("the caller stays signed in")["user"] == caller.username
    assert rooms_status(p2, caller) == 200
