"""The message lifecycle across two `chat serve` processes sharing PostgreSQL and Redis (the
cluster of `test_cluster`): changes made on one node while a client is away from the other
arrive exactly once when it resumes there, also with writers busy on both nodes."""

import random
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from tests.conftest import Account
from tests.test_cluster import Cluster, Frame, Node, Peer, make_cluster

__all__ = ["make_cluster"]  # The fixture, used by name.

EMOJI = ["\N{THUMBS UP SIGN}", ":tada:", "\N{RED APPLE}"]


def call(node: Node, account: Account, method: str, path: str, body: Any = None) -> httpx.Response:
    with httpx.Client(base_url=node.url, timeout=15, headers=account.headers) as http:
        return http.request(method, path, json=body)


def ok(r: httpx.Response) -> Any:
    assert r.status_code in (200, 201, 204), r.text
    return r.json() if r.content else None


class Mirror:
    """A client's idea of the room: the welcome's history and updates, then every message
    and update frame, applied in arrival order; and how often each update came."""

    def __init__(self, peer: Peer, state: dict[int, Frame] | None = None) -> None:
        self.peer = peer
        self.state = dict(state or {})
        self.resumed_updates = [u["id"] for u in peer.welcome.get("updates", [])]
        for message in [*peer.welcome["history"], *peer.welcome.get("updates", [])]:
            self.state[message["id"]] = message
        self.seen = len(peer.frames)

    def apply(self) -> None:
        for frame in self.peer.frames[self.seen :]:
            if frame["type"] == "message":
                self.state[frame["id"]] = {k: v for k, v in frame.items() if k != "type"}
            elif frame["type"] == "update":
                self.state[frame["message"]["id"]] = frame["message"]
        self.seen = len(self.peer.frames)

    def until_message(self, message_id: int, timeout: float = 20) -> None:
        """Read up to message `message_id`: every change numbered before it comes first."""
        self.peer.wait(lambda f: f["type"] == "message" and f["id"] == message_id, timeout)
        self.apply()

    def last_id(self) -> int:
        return max(self.state)


def stored(cluster: Cluster, node: Node, account: Account, room: str) -> dict[int, Frame]:
    return {m["id"]: m for m in cluster.stored(node, account, room)}


def test_changes_on_one_node_reach_a_client_resuming_on_the_other_exactly_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Edits, deletes and reactions made on node A while a client is disconnected from
    node B are all in its welcome's `updates` when it resumes on B, each message once in its
    current state; no `update` repeats them later (a change made afterwards does arrive:
    the positive control)."""
    cluster = make_cluster()
    a, b = cluster.nodes
    amy, bob = cluster.register(a), cluster.register(b)
    room = cluster.create_room(a, amy)
    sent = [cluster.post(a, amy, room, f"m{i}", f"n{i}") for i in range(5)]
    away = cluster.join(b, bob, room)
    last = away.welcome["history"][-1]["id"]
    assert last == sent[-1]["id"]
    away.ws.close()
    base = f"/api/rooms/{room}/messages"
    ok(call(a, amy, "PATCH", f"{base}/{sent[0]['id']}", {"body": "edited once"}))
    ok(call(a, amy, "PATCH", f"{base}/{sent[0]['id']}", {"body": f"edited @{bob.username}"}))
    ok(call(a, amy, "PUT", f"{base}/{sent[1]['id']}/reactions/{quote(EMOJI[0])}"))
    ok(call(a, bob, "PUT", f"{base}/{sent[1]['id']}/reactions/{quote(EMOJI[0])}"))
    ok(call(a, amy, "DELETE", f"{base}/{sent[2]['id']}"))
    newer = cluster.post(a, amy, room, "newer", "n-new")
    ok(call(a, amy, "PUT", f"{base}/{sent[3]['id']}/reactions/:late:"))
    now = stored(cluster, a, amy, room)

    back = cluster.join(b, bob, room, since=last)
    updates = back.welcome["updates"]
    changed = [sent[i]["id"] for i in range(4)]
    assert [u["id"] for u in updates] == changed
    assert updates == [now[i] for i in changed]
    assert updates[0]["mentions"] == [bob.username]
    assert back.welcome["history"] == [now[newer["id"]]]
    ok(call(a, amy, "PUT", f"{base}/{sent[4]['id']}/reactions/:control:"))
    back.wait(lambda f: f["type"] == "update" and f["message"]["id"] == sent[4]["id"], 10)
    repeated = [f for f in back.frames if f["type"] in ("update", "message")]
    assert len(repeated) == 1, repeated


def test_concurrent_writers_on_both_nodes_leave_every_client_with_the_database_state(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Writers on both nodes post, edit, react and delete at once; a client connected to
    each node throughout, and one that disconnects from A midway and resumes on B, all end
    with exactly the state REST history gives, and every message arrives once, in order."""
    cluster = make_cluster()
    a, b = cluster.nodes
    owner = cluster.register(a)
    room = cluster.create_room(a, owner)
    seeds = [cluster.post(a, owner, room, f"seed {i}", f"s{i}")["id"] for i in range(6)]
    writers = [(node, cluster.register(node)) for node in (a, b) for _ in range(2)]
    watchers = [Mirror(cluster.join(node, cluster.register(node), room)) for node in (a, b)]
    leaver_account = cluster.register(a)
    leaver = Mirror(cluster.join(a, leaver_account, room))
    errors: list[BaseException] = []
    halfway = threading.Barrier(len(writers) + 1)

    def write(node: Node, account: Account, seed: int) -> None:
        rng = random.Random(seed)
        mine: list[int] = []
        base = f"/api/rooms/{room}/messages"
        try:
            for step in range(24):
                if step == 12:
                    halfway.wait(30)
                action = rng.choice(["post", "post", "edit", "react", "unreact", "delete"])
                if action == "post" or not mine:
                    r = call(node, account, "POST", base, {"body": f"{account.username} {step}"})
                    mine.append(ok(r)["id"])
                elif action == "edit":
                    target = rng.choice(mine)
                    r = call(node, account, "PATCH", f"{base}/{target}", {"body": f"e{step}"})
                    assert r.status_code in (200, 404), r.text  # 404: deleted meanwhile
                elif action == "delete":
                    r = call(
                        node, account, "DELETE", f"{base}/{mine.pop(rng.randrange(len(mine)))}"
                    )
                    assert r.status_code == 204, r.text
                else:
                    target = rng.choice(seeds + mine)
                    method = "PUT" if action == "react" else "DELETE"
                    emoji = quote(rng.choice(EMOJI))
                    r = call(node, account, method, f"{base}/{target}/reactions/{emoji}")
                    assert r.status_code in (204, 404), r.text
        except BaseException as exc:
            errors.append(exc)
            halfway.abort()

    threads = [
        threading.Thread(target=write, args=(node, account, i))
        for i, (node, account) in enumerate(writers)
    ]
    for thread in threads:
        thread.start()
    halfway.wait(30)
    # Midway: the leaver reads what has arrived, goes, and comes back on the other node
    # while the writers go on.
    last = cluster.post(a, leaver_account, room, "leaving", "leaving")["id"]
    leaver.until_message(last)
    leaver.peer.ws.close()
    back = Mirror(cluster.join(b, leaver_account, room, since=leaver.last_id()), leaver.state)
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    final = cluster.post(b, owner, room, "the end", "the-end")["id"]
    truth = stored(cluster, b, owner, room)
    for mirror in [*watchers, back]:
        mirror.until_message(final)
        assert mirror.state == truth
    assert len(back.resumed_updates) == len(set(back.resumed_updates))
    for watcher in watchers:
        ids = [f["id"] for f in watcher.peer.frames if f["type"] == "message"]
        assert ids == sorted(set(ids)) and set(ids) | set(seeds) == set(truth)
    changed = [f for w in watchers for f in w.peer.frames if f["type"] == "update"]
    assert changed, "the writers made changes"
