"""Conversations across two `chat serve` processes sharing PostgreSQL and Redis (the cluster
of `test_cluster`): removals close sockets on every node, membership changes reach every
node, a DM asked for on both nodes at once is made once, and the admission race and a
broker outage leave no removed user's socket open."""

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.client import ClientConnection

from chat.closecodes import CloseCode
from chat.conversations import _OWNERS_LOCK as OWNERS_LOCK
from tests.conftest import Account, recv, unique
from tests.test_cluster import (
    Cluster,
    Frame,
    Node,
    Peer,
    RedisServer,
    health,
    make_cluster,
    private_redis,
    wait_until,
)

__all__ = ["make_cluster", "private_redis"]  # The fixtures, used by name.

FORBIDDEN = CloseCode.FORBIDDEN


def call(node: Node, account: Account, method: str, path: str, body: Any = None) -> httpx.Response:
    with httpx.Client(base_url=node.url, timeout=15, headers=account.headers) as http:
        return http.request(method, path, json=body)


def make_room(node: Node, owner: Account, kind: str = "public") -> str:
    name = unique("room-")
    r = call(node, owner, "POST", "/api/rooms", {"name": name, "kind": kind})
    assert r.status_code == 201, r.text
    return name


def ok(r: httpx.Response) -> None:
    assert r.status_code == 204, r.text


def read_to_close(ws: ClientConnection, timeout: float = 5) -> tuple[list[Frame], Close]:
    """Every frame up to the server's close, and the close."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            frames.append(recv(ws, remaining))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "connection dropped without a close frame"
        return frames, closed.rcvd
    except TimeoutError:
        pass
    raise AssertionError(f"the server did not close the connection; got {frames}")


def member_frame(room: str, event: str, user: Account, role: str | None = None) -> Frame:
    frame: Frame = {"type": "member", "room": room, "event": event, "user": user.username}
    if role is not None:
        frame["role"] = role
    return frame


def is_member_frame(frame: Frame) -> bool:
    return frame["type"] == "member"


def at_once(asks: list[tuple[Node, Account, list[str]]]) -> list[httpx.Response]:
    """`POST /api/dms` for each (node, caller, others), all sent at the same moment."""
    start = threading.Barrier(len(asks))
    answers: list[httpx.Response | None] = [None] * len(asks)

    def ask(i: int, node: Node, caller: Account, others: list[str]) -> None:
        with httpx.Client(base_url=node.url, timeout=15, headers=caller.headers) as http:
            start.wait(10)
            answers[i] = http.post("/api/dms", json={"users": others})

    threads = [threading.Thread(target=ask, args=(i, *asked)) for i, asked in enumerate(asks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    got = [r for r in answers if r is not None]
    assert len(got) == len(asks), "a request did not finish"
    return got


async def lock_waits(spy: asyncpg.Connection, count: int) -> None:
    """Wait until `count` queries of this database wait for a lock."""
    waiting = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 10
    while await spy.fetchval(waiting) != count:
        assert time.monotonic() < deadline, f"not {count} queries waiting for a lock"
        await asyncio.sleep(0.02)


def test_removals_on_one_node_close_sockets_on_the_other(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A kick and a ban made through node 1 close the user's socket in that room on node 2
    with 4403 within a second, while their socket in another room there stays (the
    control); joins, role changes, kicks, bans and leaves made through node 1 reach the
    room's sockets on node 2 as `member` frames; leaving through node 1 closes one's own
    socket on node 2 with 4403."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    owner, watcher, victim, ann = (cluster.register(p1) for _ in range(4))
    room, elsewhere = make_room(p1, owner), make_room(p1, owner)
    w = cluster.join(p2, watcher, room)
    kept = cluster.join(p2, victim, elsewhere)

    ok(call(p1, ann, "PUT", f"/api/rooms/{room}/members/{ann.username}"))
    assert w.wait(is_member_frame) == member_frame(room, "join", ann, "member")
    body = {"role": "moderator"}
    ok(call(p1, owner, "PATCH", f"/api/rooms/{room}/members/{ann.username}", body))
    assert w.wait(is_member_frame) == member_frame(room, "role", ann, "moderator")

    for event in ("kick", "ban"):
        v = cluster.join(p2, victim, room)
        assert w.wait(is_member_frame) == member_frame(room, "join", victim, "member")
        if event == "kick":
            ok(call(p1, ann, "DELETE", f"/api/rooms/{room}/members/{victim.username}"))
        else:
            ok(call(p1, ann, "PUT", f"/api/rooms/{room}/bans/{victim.username}"))
        started = time.monotonic()
        assert read_to_close(v.ws, 2)[1].code == FORBIDDEN
        assert time.monotonic() - started < 1.0
        assert w.wait(is_member_frame) == member_frame(room, event, victim)
        assert kept.send(f"still here after the {event}")["user"] == victim.username
    with cluster.ws(p2, f"/ws/rooms/{room}", victim) as refused:
        assert read_to_close(refused)[1].code == FORBIDDEN

    a = cluster.join(p2, ann, room)
    ok(call(p1, ann, "DELETE", f"/api/rooms/{room}/members/{ann.username}"))
    started = time.monotonic()
    assert read_to_close(a.ws, 2)[1].code == FORBIDDEN
    assert time.monotonic() - started < 1.0
    assert w.wait(is_member_frame) == member_frame(room, "leave", ann)
    assert w.send("the watcher stays")["user"] == watcher.username


def test_a_socket_admitted_around_a_ban_on_the_other_node_does_not_stay(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The admission race, provoked exactly: a ban through node 1 and a socket on node 2
    that has read the user's standing (not banned yet) both wait for the room's lock, the
    ban first; once let go, the ban commits and the socket's membership insert, which checks
    bans in the same statement, adds nothing: the socket is closed with 4403 before any
    welcome, the banned user has no membership and the room no `join` frame; node 2's
    watcher, who heard the ban, stays (the control)."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    owner, watcher, victim = (cluster.register(p1) for _ in range(3))
    room = make_room(p1, owner)
    w = cluster.join(p2, watcher, room)

    async def hold() -> None:
        locker = await asyncpg.connect(cluster.database_url)
        spy = await asyncpg.connect(cluster.database_url)
        try:
            room_id = await spy.fetchval("SELECT id FROM rooms WHERE name = $1", room)
            tx = locker.transaction()
            await tx.start()
            await locker.execute(
                "SELECT pg_advisory_xact_lock($1::int, $2::int)", OWNERS_LOCK, room_id
            )
            ban = asyncio.create_task(
                asyncio.to_thread(
                    call, p1, owner, "PUT", f"/api/rooms/{room}/bans/{victim.username}"
                )
            )
            await lock_waits(spy, 1)
            held.append(cluster.ws(p2, f"/ws/rooms/{room}", victim))
            await lock_waits(spy, 2)
            await tx.rollback()
            ok(await ban)
            await asyncio.to_thread(w.wait, lambda f: f == member_frame(room, "ban", victim))
        finally:
            await locker.close()
            await spy.close()

    held: list[ClientConnection] = []
    asyncio.run(hold())
    frames, close = read_to_close(held[0])
    assert frames == [] and close.code == FORBIDDEN
    assert w.send("the watcher stays")["user"] == watcher.username
    assert victim.username not in cluster.active_users(p1).get(room, [])
    r = call(p1, owner, "GET", f"/api/rooms/{room}/members")
    assert r.status_code == 200, r.text
    assert victim.username not in [m["username"] for m in r.json()]
    assert member_frame(room, "ban", victim) in w.frames
    assert [f for f in w.frames if f["type"] == "member" and f["event"] == "join"] == []


def test_a_socket_admitted_around_a_kick_on_the_other_node_does_not_stay(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The admission race, provoked exactly, where only the `removed_since` guard stands: a
    socket on node 2 that has read the user's role in a private room (a member) and is held
    before it reads their bans, while a kick through node 1 commits and node 2 hears of it,
    is closed with 4403 before any welcome once it gets through (no control event is left
    to close it); node 2's watcher, who heard the kick, stays (the control)."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    owner, watcher, victim = (cluster.register(p1) for _ in range(3))
    room = make_room(p1, owner, "private")
    for who in (watcher, victim):
        ok(call(p1, owner, "PUT", f"/api/rooms/{room}/members/{who.username}"))
    w = cluster.join(p2, watcher, room)
    held: list[ClientConnection] = []

    async def hold() -> None:
        kicker_lock, bans_lock, spy = [
            await asyncpg.connect(cluster.database_url) for _ in range(3)
        ]
        try:
            room_id = await spy.fetchval("SELECT id FROM rooms WHERE name = $1", room)
            # The kick's removal takes the room's ownership lock first: hold it there, past
            # the kicker's own standing, which reads the bans.
            kicker_tx = kicker_lock.transaction()
            await kicker_tx.start()
            await kicker_lock.execute(
                "SELECT pg_advisory_xact_lock($1::int, $2::int)", OWNERS_LOCK, room_id
            )
            kick = asyncio.create_task(
                asyncio.to_thread(
                    call, p1, owner, "DELETE", f"/api/rooms/{room}/members/{victim.username}"
                )
            )
            await lock_waits(spy, 1)
            # Then hold the socket's standing between its role (member) and its bans.
            bans_tx = bans_lock.transaction()
            await bans_tx.start()
            await bans_lock.execute("LOCK TABLE room_bans IN ACCESS EXCLUSIVE MODE")
            held.append(cluster.ws(p2, f"/ws/rooms/{room}", victim))
            await lock_waits(spy, 2)
            await kicker_tx.rollback()
            ok(await kick)
            await asyncio.to_thread(w.wait, lambda f: f == member_frame(room, "kick", victim))
            await bans_tx.rollback()
        finally:
            for conn in (kicker_lock, bans_lock, spy):
                await conn.close()

    asyncio.run(hold())
    frames, close = read_to_close(held[0])
    assert frames == [] and close.code == FORBIDDEN
    assert w.send("the watcher stays")["user"] == watcher.username
    assert victim.username not in cluster.active_users(p1).get(room, [])


def test_a_kick_during_a_redis_outage_closes_the_socket_when_redis_returns(
    make_cluster: Callable[..., Cluster], private_redis: RedisServer
) -> None:
    """Users kicked through node 1 from a public and from a private room while Redis is down
    (no event can carry it) keep their sockets on node 2 until Redis is back, then those
    close with 4403; another user's socket there stays (the control)."""
    cluster = make_cluster(broker_url=private_redis.url)
    p1, p2 = cluster.nodes
    owner, bystander, ann, bob = (cluster.register(p1) for _ in range(4))
    public, private = make_room(p1, owner), make_room(p1, owner, "private")
    ok(call(p1, owner, "PUT", f"/api/rooms/{private}/members/{bob.username}"))
    ok(call(p1, owner, "PUT", f"/api/rooms/{private}/members/{bystander.username}"))
    a, b = cluster.join(p2, ann, public), cluster.join(p2, bob, private)
    stays = [cluster.join(p2, bystander, public), cluster.join(p2, bystander, private)]

    private_redis.stop()
    for node in cluster.nodes:
        wait_until(lambda node=node: health(node.url) == 503, 5, f"{node.url} reports 503")
    ok(call(p1, owner, "DELETE", f"/api/rooms/{public}/members/{ann.username}"))
    ok(call(p1, owner, "DELETE", f"/api/rooms/{private}/members/{bob.username}"))
    # Nothing could carry the kicks: the sockets on node 2 still serve.
    assert a.send("still open while Redis is away")["user"] == ann.username
    assert b.send("still open while Redis is away")["user"] == bob.username

    private_redis.start()
    assert read_to_close(a.ws, 15)[1].code == FORBIDDEN
    assert read_to_close(b.ws, 5)[1].code == FORBIDDEN
    for peer in stays:
        assert peer.send("still here")["user"] == bystander.username


def test_a_dm_asked_for_on_both_nodes_at_once_is_made_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    """`POST /api/dms` for the same people, asked by each of them through both nodes at the
    same moment (pairs and a group of three), gives one room: every answer names it, one
    is 201 and the others 200, and each member's room list on either node holds exactly
    that one DM."""
    cluster = make_cluster()
    people = [cluster.register(cluster.nodes[0]) for _ in range(9)]
    groups = [people[0:2], people[2:4], people[4:6], people[6:9]]
    for group in groups:
        # Each member asks, on alternate nodes.
        asks = [
            (cluster.nodes[i % 2], caller, [p.username for p in group if p is not caller])
            for i, caller in enumerate(group)
        ]
        answers = at_once(asks)
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200] * (len(group) - 1) + [201], [r.text for r in answers]
        names = {r.json()["name"] for r in answers}
        assert len(names) == 1, names
        (name,) = names
        for person in group:
            for node in cluster.nodes:
                r = call(node, person, "GET", "/api/rooms")
                assert r.status_code == 200, r.text
                dms = [room["name"] for room in r.json() if room["kind"] == "dm"]
                assert dms == [name], (person.username, dms)


def test_the_admins_view_of_the_cluster_never_shows_a_dm(
    make_cluster: Callable[..., Cluster],
) -> None:
    """With a DM's members connected on both nodes, neither node's `GET
    /api/admin/active-users` nor an admin view shows the DM, while a public room with
    someone in it is shown (the control)."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    admin = cluster.admin
    assert admin is not None
    ann, bob = cluster.register(p1), cluster.register(p2)
    public = make_room(p1, ann)
    r = call(p1, ann, "POST", "/api/dms", {"users": [bob.username]})
    assert r.status_code == 201, r.text
    dm = r.json()["name"]
    cluster.join(p1, ann, dm)
    b: Peer = cluster.join(p2, bob, dm)
    assert b.welcome["users"] == sorted([ann.username, bob.username])
    cluster.join(p2, bob, public)
    for node in cluster.nodes:
        wait_until(
            lambda node=node: cluster.active_users(node).get(public) == [bob.username],
            5,
            "the public room is shown",
        )
        assert dm not in cluster.active_users(node)
    view = cluster.ws(p1, "/ws/admin", admin)
    deadline = time.monotonic() + 5
    while True:
        stats = recv(view, max(deadline - time.monotonic(), 0.01))
        if stats["type"] == "alert":
            continue
        assert stats["type"] == "stats" and dm not in stats["rooms"], stats
        if stats["rooms"].get(public) == [bob.username]:
            break
