"""Attention across two `chat serve` processes sharing PostgreSQL and Redis (the cluster of
`test_cluster`): a read marker moved through one node reaches the user's sockets on the
other; messages posted through one node reach a `/ws/me` on the other as `activity`; room
and membership changes made through one node reach a `/ws/me` on the other."""

from collections.abc import Callable

from websockets.sync.client import ClientConnection

from tests.conftest import Account, recv
from tests.test_cluster import Cluster, Frame, Node, make_cluster, private_redis
from tests.test_cluster_conversations import call, make_room, ok
from tests.test_ws_me import wait_for

__all__ = ["make_cluster", "private_redis"]  # The fixtures, used by name.


def me(cluster: Cluster, node: Node, account: Account) -> ClientConnection:
    ws = cluster.ws(node, "/ws/me", account)
    assert recv(ws, 10) == {"type": "ready", "user": account.username}
    return ws


def say(cluster: Cluster, node: Node, account: Account, room: str, body: str) -> int:
    message_id: int = cluster.post(node, account, room, body, body)["id"]
    return message_id


def test_a_read_marker_reaches_the_users_sockets_on_the_other_node(
    make_cluster: Callable[..., Cluster],
) -> None:
    """`PUT .../read` through node 1 reaches the user's `/ws/me` and room socket on node 2
    as `{"type": "read", "room", "up_to"}`; another user's socket there hears nothing of it
    (its own read, next, is the first `read` it gets)."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    amy, bob = cluster.register(p1), cluster.register(p1)
    room = make_room(p1, amy)
    ok(call(p1, bob, "PUT", f"/api/rooms/{room}/members/{bob.username}"))
    ids = [say(cluster, p1, amy, room, f"m{i}") for i in range(3)]
    mine = me(cluster, p2, bob)
    in_room = cluster.join(p2, bob, room)
    amys = me(cluster, p2, amy)

    ok(call(p1, bob, "PUT", f"/api/rooms/{room}/read", {"up_to": ids[1]}))
    want: Frame = {"type": "read", "room": room, "up_to": ids[1]}
    assert wait_for(mine, {"type": "read"})[-1] == want
    assert in_room.wait(lambda f: f["type"] == "read") == want

    ok(call(p1, amy, "PUT", f"/api/rooms/{room}/read", {"up_to": ids[2]}))
    seen = wait_for(amys, {"type": "read"})
    assert [f for f in seen if f["type"] == "read"] == [{**want, "up_to": ids[2]}]


def test_activity_and_room_changes_reach_a_me_socket_on_the_other_node(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Messages posted through node 1 reach a member's `/ws/me` on node 2 as `activity`
    with their unread count; being added to a private room and its topic changed through
    node 1 reach it as `member` and `room` frames."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    amy, bob = cluster.register(p1), cluster.register(p1)
    room = make_room(p1, amy)
    ok(call(p1, bob, "PUT", f"/api/rooms/{room}/members/{bob.username}"))
    mine = me(cluster, p2, bob)

    ids = [say(cluster, p1, amy, room, f"m{i}") for i in range(3)]
    want: Frame = {
        "type": "activity",
        "room": room,
        "last_message_id": ids[-1],
        "unread": 3,
        "mentions": 0,
    }
    assert wait_for(mine, want)[-1] == want

    private = make_room(p1, amy, "private")
    ok(call(p1, amy, "PUT", f"/api/rooms/{private}/members/{bob.username}"))
    seen = wait_for(mine, {"type": "room", "room": private})
    assert seen[-1]["event"] == "added"
    assert {"type": "member", "room": private, "event": "join", "user": bob.username,
            "role": "member"} in seen  # fmt: skip
    r = call(p1, amy, "PATCH", f"/api/rooms/{private}", {"topic": "plans"})
    assert r.status_code == 200, r.text
    changed = wait_for(mine, {"type": "room", "room": private, "event": "changed"})[-1]
    assert changed["topic"] == "plans"
