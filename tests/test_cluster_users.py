"""User administration on two `chat serve` processes sharing PostgreSQL and Redis."""

import time
from collections.abc import Callable

import httpx

from tests.conftest import recv
from tests.test_cluster import (
    Cluster,
    RedisServer,
    health,
    make_cluster,
    presence,
    private_redis,
    wait_until,
)
from tests.ws_helpers import closed_with

__all__ = ["make_cluster", "private_redis"]  # The fixtures, used by name.


def test_deactivation_on_one_process_ends_the_users_sockets_on_the_other(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Deactivated through process 1, a user's room socket and admin view on process 2
    close with 1008 within a second and the user leaves presence there; another user's
    socket on process 2 stays (the control); the user's token gets 401 on both."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    admin = cluster.admin
    assert admin is not None
    target, bystander = cluster.register(p2), cluster.register(p2)
    room = cluster.create_room(p1, bystander)
    with httpx.Client(base_url=p1.url, timeout=15, headers=admin.headers) as http:
        r = http.patch(f"/api/admin/users/{target.username}", json={"is_admin": True})
        assert r.status_code == 200, r.text
    theirs = cluster.join(p2, bystander, room)
    mine = cluster.join(p2, target, room)
    view = cluster.ws(p2, "/ws/admin", target)
    assert recv(view)["type"] == "stats"
    theirs.wait(presence("join", target.username))

    with httpx.Client(base_url=p1.url, timeout=15, headers=admin.headers) as http:
        r = http.patch(f"/api/admin/users/{target.username}", json={"is_active": False})
        assert r.status_code == 200, r.text
    started = time.monotonic()
    assert closed_with(mine.ws, timeout=3).code == 1008
    assert closed_with(view, timeout=3).code == 1008
    assert time.monotonic() - started < 1.0
    left = theirs.wait(presence("leave", target.username), 3)
    assert target.username not in left["users"]
    assert theirs.send("still here")["user"] == bystander.username
    for node in (p1, p2):
        r = httpx.get(f"{node.url}/api/rooms", headers=target.headers, timeout=15)
        assert r.status_code == 401


def test_a_deactivation_during_a_redis_outage_reaches_the_other_process_when_it_returns(
    make_cluster: Callable[..., Cluster], private_redis: RedisServer
) -> None:
    """An account deactivated on process 1 while Redis is down (no event can carry it) has
    its socket on process 2 closed (1008) once Redis is back; another user's socket there
    is left alone (the control)."""
    cluster = make_cluster(broker_url=private_redis.url)
    p1, p2 = cluster.nodes
    admin = cluster.admin
    assert admin is not None
    ann, bob = cluster.register(p1), cluster.register(p1)
    room = cluster.create_room(p1, ann)
    a, b = cluster.join(p2, ann, room), cluster.join(p2, bob, room)

    private_redis.stop()
    for node in cluster.nodes:
        wait_until(lambda node=node: health(node.url) == 503, 5, f"{node.url} reports 503")
    with httpx.Client(base_url=p1.url, timeout=15, headers=admin.headers) as http:
        r = http.patch(f"/api/admin/users/{ann.username}", json={"is_active": False})
        assert r.status_code == 200, r.text
    # Nothing could carry the deactivation: the socket on process 2 still serves.
    assert a.send("still open while Redis is away")["user"] == ann.username

    private_redis.start()
    assert closed_with(a.ws, timeout=15).code == 1008
    assert b.send("still here")["user"] == bob.username
