"""Scale-out: two `chat serve` processes sharing one PostgreSQL database and Redis."""

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from tests.conftest import (
    PASSWORD,
    REDIS_URL,
    TEST_HASH_MEMORY_KIB,
    Account,
    drop_postgres_database,
    need,
    new_postgres_database,
    postgres_available,
    recv,
    redis_available,
    unique,
)
from tests.ws_helpers import closed_with

Frame = dict[str, Any]
START_TIMEOUT_SECS = 30.0
# With this presence TTL a SIGKILLed process's users must be gone within it (plus a margin).
SHORT_PRESENCE_TTL_SECS = 3.0
PRESENCE_MARGIN_SECS = 2.0
# No test here is about rate limiting.
UNLIMITED = {
    "CHAT_RATE_BURST": "10000",
    "CHAT_RATE_PER_SEC": "10000",
    "CHAT_REGISTER_BURST": "10000",
    "CHAT_REGISTER_GLOBAL_BURST": "10000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until it holds; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def health(url: str) -> int:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code
    except httpx.TransportError:
        return 0


@dataclass
class Node:
    """One `chat serve` subprocess; its output goes to a log file quoted on failure."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chat", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while health(self.url) != 200:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"chat serve did not come up\n{self.log()}"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no leave announced, nothing cleaned up in Redis."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class Peer:
    """A room WebSocket that records every frame it receives, the welcome's history included."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome = recv(ws, 10)
        assert self.welcome["type"] == "welcome", self.welcome
        self.frames: list[Frame] = []
        self.messages: list[Frame] = list(self.welcome["history"])

    def wait(self, predicate: Callable[[Frame], bool], timeout: float = 5) -> Frame:
        """The first frame from now on matching `predicate`; every frame is recorded."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame; last frames: {self.frames[-5:]}")
            frame = recv(self.ws, remaining)
            self.frames.append(frame)
            if frame["type"] == "message":
                self.messages.append(frame)
            if predicate(frame):
                return frame

    def wait_for_id(self, message_id: int, timeout: float = 5) -> None:
        """Read until the message `message_id` (or a later one) has arrived."""
        if not any(m["id"] >= message_id for m in self.messages):
            self.wait(lambda f: f["type"] == "message" and f["id"] >= message_id, timeout)

    def send(self, body: str, nonce: str | None = None) -> Frame:
        """Send a message and wait for its acknowledgement: the sender's copy with the nonce."""
        nonce = nonce or secrets.token_hex(8)
        self.ws.send(json.dumps({"type": "message", "body": body, "nonce": nonce}))
        return self.wait(lambda f: f["type"] == "message" and f["nonce"] == nonce)

    def ids(self) -> list[int]:
        return [m["id"] for m in self.messages]


@dataclass
class Cluster:
    nodes: list[Node]
    database_url: str
    broker_url: str
    namespace: str
    admin: Account | None = None
    _sockets: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def register(self, node: Node, username: str | None = None) -> Account:
        username = username or unique()
        with httpx.Client(base_url=node.url, timeout=15) as http:
            r = http.post("/api/auth/register", json={"username": username, "password": PASSWORD})
            assert r.status_code == 201, r.text
            user = r.json()
            r = http.post("/api/auth/token", data={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.text
        return Account(user["id"], username, PASSWORD, r.json()["access_token"], user["is_admin"])

    def create_room(self, node: Node, account: Account) -> str:
        name = unique("room-")
        with httpx.Client(base_url=node.url, timeout=15) as http:
            r = http.post("/api/rooms", json={"name": name}, headers=account.headers)
        assert r.status_code == 201, r.text
        return name

    def ws(self, node: Node, path: str, account: Account) -> ClientConnection:
        return self._sockets.enter_context(
            connect(
                f"{node.ws_url}{path}",
                additional_headers=account.headers,
                open_timeout=10,
                close_timeout=2,
                max_size=None,
            )
        )

    def join(self, node: Node, account: Account, room: str, since: int | None = None) -> Peer:
        path = f"/ws/rooms/{room}" + ("" if since is None else f"?since={since}")
        return Peer(self.ws(node, path, account))

    def post(self, node: Node, account: Account, room: str, body: str, nonce: str) -> Frame:
        with httpx.Client(base_url=node.url, timeout=15) as http:
            r = http.post(
                f"/api/rooms/{room}/messages",
                json={"body": body, "nonce": nonce},
                headers=account.headers,
            )
        assert r.status_code == 201, r.text
        return r.json()

    def stored(self, node: Node, account: Account, room: str) -> list[Frame]:
        """Every message of `room` in the database, oldest first, read page by page."""
        found: list[Frame] = []
        with httpx.Client(base_url=node.url, timeout=15) as http:
            while True:
                after = found[-1]["id"] if found else 0
                r = http.get(
                    f"/api/rooms/{room}/messages",
                    params={"after": after, "limit": 200},
                    headers=account.headers,
                )
                assert r.status_code == 200, r.text
                page = r.json()["messages"]
                if not page:
                    return found
                found += page

    def active_users(self, node: Node) -> dict[str, list[str]]:
        assert self.admin is not None
        r = httpx.get(f"{node.url}/api/admin/active-users", headers=self.admin.headers, timeout=15)
        assert r.status_code == 200, r.text
        return r.json()["rooms"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._sockets.close()
        for node in self.nodes:
            node.kill()
        drop_postgres_database(self.database_url)
        # Leave nothing behind in a Redis that other deployments (or tests) share.
        with contextlib.suppress(redis.RedisError, OSError):
            client = redis.Redis.from_url(self.broker_url, socket_connect_timeout=1)
            keys = list(client.scan_iter(f"{self.namespace}:*"))
            if keys:
                client.delete(*keys)
            client.close()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start two `chat serve` processes on one fresh database; both are killed at teardown."""
    need(postgres_available(), "PostgreSQL at 127.0.0.1:5432")
    need(redis_available(), "Redis at 127.0.0.1:6379")
    clusters: list[Cluster] = []

    def make(broker_url: str = REDIS_URL, **settings: str) -> Cluster:
        url = new_postgres_database(migrated=True)
        cluster = Cluster([], url, broker_url, f"t{secrets.token_hex(6)}")
        clusters.append(cluster)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env |= {
            "CHAT_DATABASE_URL": cluster.database_url,
            "CHAT_BROKER_URL": broker_url,
            "CHAT_SECRET_KEY": secrets.token_urlsafe(48),
            "CHAT_REDIS_NAMESPACE": cluster.namespace,
            "CHAT_PASSWORD_HASH_MEMORY_KIB": str(TEST_HASH_MEMORY_KIB),
            **UNLIMITED,
            **settings,
        }
        migrated = subprocess.run(
            [sys.executable, "-m", "chat", "migrate"],
            env={**env, "CHAT_DATA_DIR": str(tmp_path / "migrate")},
            capture_output=True,
            timeout=60,
        )
        assert migrated.returncode == 0, migrated.stderr.decode()
        for i in (1, 2):
            data_dir = tmp_path / f"{cluster.namespace}-node{i}"
            data_dir.mkdir()
            node = Node({**env, "CHAT_DATA_DIR": str(data_dir)}, data_dir / "server.log")
            cluster.nodes.append(node)
            node.start()
        for node in cluster.nodes:
            node.wait_ready()
        cluster.admin = cluster.register(cluster.nodes[0], unique("admin"))
        assert cluster.admin.is_admin
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


@dataclass
class RedisServer:
    """A `redis-server` of this test's own, which it may stop and start again."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.data_dir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
            with contextlib.suppress(redis.RedisError):
                return bool(client.ping())
            return False

        wait_until(answers, 10, "redis-server answers")
        client.close()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, but nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    need(shutil.which("redis-server") is not None, "redis-server on PATH")
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    server = RedisServer(data_dir)
    server.start()
    yield server
    server.stop()


def is_message(frame: Frame) -> bool:
    return frame["type"] == "message"


def presence(event: str, user: str) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "presence" and f["event"] == event and f["user"] == user


def stats_until(admin: ClientConnection, predicate: Callable[[Frame], bool]) -> Frame:
    """The first stats frame of an admin view matching `predicate`, within 5 seconds."""
    deadline = time.monotonic() + 5
    while True:
        stats = recv(admin, max(deadline - time.monotonic(), 0.01))
        if stats["type"] == "alert":
            continue
        assert stats["type"] == "stats", stats
        if predicate(stats):
            return stats


def test_chat_presence_typing_and_admin_views_span_both_processes(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Users on different processes chat, see each other come and go and type, and every
    admin view is the cluster's."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    alice, bob, carol = cluster.register(p1), cluster.register(p2), cluster.register(p1)
    room = cluster.create_room(p1, alice)

    a = cluster.join(p1, alice, room)
    assert a.welcome["users"] == [alice.username]
    # Carol, an onlooker on process 1, would see this process's own events twice if they
    # came back to it through Redis.
    c = cluster.join(p1, carol, room)
    b = cluster.join(p2, bob, room)
    everyone = sorted([alice.username, bob.username, carol.username])
    assert b.welcome["users"] == everyone
    joined = a.wait(presence("join", bob.username))
    assert joined["users"] == everyone

    # Messages both ways; each sender's own copy carries its nonce.
    sent = a.send("hello from process 1", "nonce-a")
    assert sent["user"] == alice.username and sent["nonce"] == "nonce-a"
    got = b.wait(is_message)
    assert (got["id"], got["user"], got["body"]) == (sent["id"], alice.username, sent["body"])
    sent = b.send("hello from process 2", "nonce-b")
    assert sent["user"] == bob.username and sent["nonce"] == "nonce-b"
    got = a.wait(is_message)
    assert (got["id"], got["user"], got["body"]) == (sent["id"], bob.username, sent["body"])

    # Typing reaches the other process, never the typist: a typing frame to the typist
    # would come before the message the other one sends after seeing it.
    a.ws.send(json.dumps({"type": "typing"}))
    assert b.wait(lambda f: f["type"] == "typing")["user"] == alice.username
    b.ws.send(json.dumps({"type": "typing"}))
    assert a.wait(lambda f: f["type"] == "typing")["user"] == bob.username
    before = len(a.frames), len(b.frames)
    last = b.send("after typing")
    a.wait_for_id(last["id"])
    a.send("after typing too")
    b.wait_for_id(last["id"] + 1)
    assert not [f for f in a.frames[before[0] :] if f["type"] == "typing"]
    assert not [f for f in b.frames[before[1] :] if f["type"] == "typing"]
    c.wait_for_id(last["id"] + 1)
    assert sorted(f["user"] for f in c.frames if f["type"] == "typing") == sorted(
        [alice.username, bob.username]
    )
    assert len([f for f in c.frames if presence("join", bob.username)(f)]) == 1
    assert c.ids() == [1, 2, 3, 4]
    c.ws.close()
    both = sorted([alice.username, bob.username])
    assert a.wait(presence("leave", carol.username))["users"] == both
    assert b.wait(presence("leave", carol.username))["users"] == both

    # A REST post to process 1 reaches a socket on process 2.
    posted = cluster.post(p1, alice, room, "posted over REST", "rest-1")
    got = b.wait(is_message)
    assert (got["id"], got["body"], got["user"]) == (posted["id"], posted["body"], alice.username)

    # Every admin view is the cluster's, whichever process answers.
    expected = {room: both}
    assert cluster.active_users(p1) == expected
    assert cluster.active_users(p2) == expected
    assert cluster.admin is not None
    admin = cluster.ws(p2, "/ws/admin", cluster.admin)
    stats = recv(admin)
    assert stats["type"] == "stats" and stats["rooms"] == expected, stats
    # Process 1's figures arrive through Redis, reported about once a second.
    stats_until(admin, lambda s: s["connections"] == 2)

    # Alice, on process 1, leaves: Bob on process 2 sees it, and so does every admin view.
    a.ws.close()
    left = b.wait(presence("leave", alice.username))
    assert left["users"] == [bob.username]
    stats_until(admin, lambda s: s["rooms"] == {room: [bob.username]})
    assert cluster.active_users(p1) == cluster.active_users(p2) == {room: [bob.username]}

    # Bob, on process 2, leaves: the room is empty on both.
    b.ws.close()
    wait_until(lambda: cluster.active_users(p1) == {}, 5, "the room is empty on process 1")
    assert cluster.active_users(p2) == {}


def test_users_of_a_killed_process_leave_and_resume_on_the_other(
    make_cluster: Callable[..., Cluster],
) -> None:
    """When a process is SIGKILLed its users leave within the presence TTL, the other process
    keeps serving, and a client resuming there with `since` gets exactly what it missed."""
    cluster = make_cluster(CHAT_PRESENCE_TTL_SECS=str(SHORT_PRESENCE_TTL_SECS))
    p1, p2 = cluster.nodes
    ann, ben, wes = cluster.register(p1), cluster.register(p1), cluster.register(p2)
    room = cluster.create_room(p1, ann)
    a = cluster.join(p1, ann, room)
    cluster.join(p1, ben, room)
    w = cluster.join(p2, wes, room)
    assert w.welcome["users"] == sorted([ann.username, ben.username, wes.username])
    for i in range(3):
        w.wait_for_id(a.send(f"before {i}")["id"])
    assert a.ids() == w.ids() == [1, 2, 3]
    last_seen = a.ids()[-1]

    p1.kill()
    killed_at = time.monotonic()
    # Process 2 keeps serving while process 1's users are still listed.
    missed = [w.send(f"meanwhile {i}") for i in range(3)]
    assert health(p2.url) == 200

    gone = {ann.username, ben.username}
    while gone:
        remaining = killed_at + SHORT_PRESENCE_TTL_SECS + PRESENCE_MARGIN_SECS - time.monotonic()
        left = w.wait(lambda f: f["type"] == "presence", max(remaining, 0.01))
        assert left["event"] == "leave" and left["user"] in gone, left
        gone.remove(left["user"])
    assert left["users"] == [wes.username]
    assert cluster.active_users(p2) == {room: [wes.username]}

    resumed = cluster.join(p2, ann, room, since=last_seen)
    assert resumed.welcome["history"] == [
        {k: v for k, v in m.items() if k != "type"} for m in missed
    ]
    assert w.wait(presence("join", ann.username))["users"] == sorted([ann.username, wes.username])
    after = w.send("after the resume")
    resumed.wait_for_id(after["id"])
    assert resumed.ids() == [4, 5, 6, 7]
    assert [m["id"] for m in cluster.stored(p2, wes, room)] == [1, 2, 3, 4, 5, 6, 7]


def test_concurrent_senders_on_both_processes_are_seen_in_one_order(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Messages sent at once through both processes reach every socket on either process
    exactly once, gap-free, in the database's order; `since` resumes right after."""
    senders_per_node, per_sender = 2, 75
    total = 2 * senders_per_node * per_sender
    cluster = make_cluster()
    admin = cluster.admin
    assert admin is not None
    room = cluster.create_room(cluster.nodes[0], admin)
    senders: list[tuple[Peer, str]] = []
    readers: list[Peer] = []
    for node in cluster.nodes:
        for _ in range(senders_per_node):
            account = cluster.register(node)
            senders.append((cluster.join(node, account, room), account.username))
        readers.append(cluster.join(node, cluster.register(node), room))
    errors: list[BaseException] = []

    def send_all(peer: Peer, user: str) -> None:
        try:
            for i in range(per_sender):
                frame = {"type": "message", "body": f"{user} {i}", "nonce": f"{user}-{i}"}
                peer.ws.send(json.dumps(frame))
            read_all(peer)
        except BaseException as exc:
            errors.append(exc)

    def read_all(peer: Peer) -> None:
        try:
            while len(peer.messages) < total:
                peer.wait(is_message, 20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send_all, args=sender) for sender in senders]
    threads += [threading.Thread(target=read_all, args=(reader,)) for reader in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)

    # One last message: whatever arrives before it counts, late duplicates included.
    peers = [peer for peer, _ in senders] + readers
    total += 1
    readers[0].send("last")
    for peer in peers:
        peer.wait_for_id(total)
    stored = cluster.stored(cluster.nodes[1], admin, room)
    assert [m["id"] for m in stored] == list(range(1, total + 1))
    for peer in peers:
        assert peer.ids() == list(range(1, total + 1))
        assert [m["body"] for m in peer.messages] == [m["body"] for m in stored]
    for peer, user in senders:
        own = [m["nonce"] for m in peer.messages if m["user"] == user]
        assert own == [f"{user}-{i}" for i in range(per_sender)]

    since = total // 3
    for node in cluster.nodes:
        late = cluster.join(node, cluster.register(node), room, since=since)
        assert [m["id"] for m in late.welcome["history"]] == list(range(since + 1, total + 1))
        assert "truncated" not in late.welcome


def test_redis_outage_degrades_and_recovers(
    make_cluster: Callable[..., Cluster], private_redis: RedisServer
) -> None:
    """Without Redis each process reports 503 but still stores and acknowledges messages;
    once Redis is back the processes catch up and fan out again, losing nothing."""
    cluster = make_cluster(
        broker_url=private_redis.url, CHAT_PRESENCE_TTL_SECS=str(SHORT_PRESENCE_TTL_SECS)
    )
    p1, p2 = cluster.nodes
    ann, ava, bob = cluster.register(p1), cluster.register(p1), cluster.register(p2)
    room = cluster.create_room(p1, ann)
    a, a2, b = cluster.join(p1, ann, room), cluster.join(p1, ava, room), cluster.join(p2, bob, room)
    acked = [a.send("before the outage")]
    b.wait_for_id(acked[-1]["id"])

    private_redis.stop()
    for node in cluster.nodes:
        wait_until(lambda node=node: health(node.url) == 503, 5, f"{node.url} reports 503")

    # Process 1 stores and acknowledges over WebSocket and REST; its own sockets see it all.
    acked += [a.send(f"during the outage {i}") for i in range(3)]
    acked.append(cluster.post(p1, ann, room, "posted during the outage", "rest-outage"))
    a2.wait_for_id(acked[-1]["id"])
    a.wait_for_id(acked[-1]["id"])
    # Process 2 too: its message comes after a gap, which it reads from the database.
    acked.append(b.send("from process 2 during the outage"))
    assert b.ids() == [m["id"] for m in acked]
    assert all(health(node.url) == 503 for node in cluster.nodes)

    private_redis.start()
    for node in cluster.nodes:
        wait_until(lambda node=node: health(node.url) == 200, 10, f"{node.url} recovers")
    # Process 1 catches up on reconnecting, with nothing new sent to prompt it.
    a.wait_for_id(acked[-1]["id"])
    a2.wait_for_id(acked[-1]["id"])

    # Fan-out resumes both ways.
    acked.append(a.send("after the outage, from process 1"))
    b.wait_for_id(acked[-1]["id"])
    acked.append(b.send("after the outage, from process 2"))
    a.wait_for_id(acked[-1]["id"])
    a2.wait_for_id(acked[-1]["id"])

    expected = [m["id"] for m in acked]
    assert expected == list(range(1, len(acked) + 1))
    stored = cluster.stored(p2, bob, room)
    assert [(m["id"], m["body"], m["nonce"]) for m in stored] == [
        (m["id"], m["body"], m["nonce"]) for m in acked
    ]
    for peer in (a, a2, b):
        assert peer.ids() == expected
    resumed = cluster.join(p2, ann, room, since=1)
    assert [m["id"] for m in resumed.welcome["history"]] == expected[1:]

    # The restarted Redis started empty: each process puts its users back into presence.
    everyone = {room: sorted([ann.username, ava.username, bob.username])}
    for node in cluster.nodes:
        wait_until(lambda node=node: cluster.active_users(node) == everyone, 5, "presence")


def test_redis_stall_recovers_and_delivers_what_was_not_published(
    make_cluster: Callable[..., Cluster], private_redis: RedisServer
) -> None:
    """While Redis stops answering, messages are still acknowledged and health is 503; once it
    answers again health is 200 everywhere, the other process gets every message stored
    meanwhile without a new one to prompt it, and fan-out goes on."""
    cluster = make_cluster(broker_url=private_redis.url)
    p1, p2 = cluster.nodes
    ann, bob = cluster.register(p1), cluster.register(p2)
    room = cluster.create_room(p1, ann)
    a, b = cluster.join(p1, ann, room), cluster.join(p2, bob, room)
    acked = [a.send("before the stall")]
    b.wait_for_id(acked[-1]["id"])

    private_redis.pause()
    # The first publish times out; what is stored after it is not published at all.
    acked += [a.send(f"during the stall {i}") for i in range(3)]
    for node in cluster.nodes:
        assert health(node.url) == 503
    private_redis.resume()

    for node in cluster.nodes:
        wait_until(lambda node=node: health(node.url) == 200, 10, f"{node.url} recovers")
    b.wait_for_id(acked[-1]["id"])
    acked.append(a.send("after the stall, from process 1"))
    b.wait_for_id(acked[-1]["id"])
    acked.append(b.send("after the stall, from process 2"))
    a.wait_for_id(acked[-1]["id"])

    expected = list(range(1, len(acked) + 1))
    assert [m["id"] for m in acked] == expected
    assert a.ids() == b.ids() == expected
    assert [m["id"] for m in cluster.stored(p2, bob, room)] == expected


def test_rate_limit_holds_across_processes(make_cluster: Callable[..., Cluster]) -> None:
    """A user's message budget is shared by both processes: the other one gains nothing."""
    cluster = make_cluster(CHAT_RATE_BURST="4", CHAT_RATE_PER_SEC="0.01")
    one, two = cluster.nodes
    sender, bystander = cluster.register(one), cluster.register(two)
    room = cluster.create_room(one, sender)
    statuses = []
    for i, node in enumerate((one, two, one, two, one, two)):
        r = httpx.post(
            f"{node.url}/api/rooms/{room}/messages",
            json={"body": f"m{i}"},
            headers={"Authorization": f"Bearer {sender.token}"},
        )
        statuses.append(r.status_code)
    assert statuses == [201, 201, 201, 201, 429, 429]
    r = httpx.post(
        f"{two.url}/api/rooms/{room}/messages",
        json={"body": "unaffected"},
        headers={"Authorization": f"Bearer {bystander.token}"},
    )
    assert r.status_code == 201


def test_sign_out_and_a_lost_role_close_sockets_on_every_process(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A sign-out on process 1 closes its token's room socket and admin view on process 2 at
    once (1008), leaving the same admin's other session alone; an admin who loses the role
    loses the admin view on both processes within about a second."""
    cluster = make_cluster()
    p1, p2 = cluster.nodes
    assert cluster.admin is not None
    admin = cluster.admin
    deputy = cluster.register(p2)
    room = cluster.create_room(p1, deputy)

    async def set_admin(is_admin: bool) -> None:
        conn = await asyncpg.connect(cluster.database_url)
        try:
            await conn.execute("UPDATE users SET is_admin = $1 WHERE id = $2", is_admin, deputy.id)
        finally:
            await conn.close()

    asyncio.run(set_admin(True))
    with httpx.Client(base_url=p1.url, timeout=15) as http:
        r = http.post("/api/auth/token", data={"username": admin.username, "password": PASSWORD})
        other_session = replace(admin, token=r.json()["access_token"])
    view = cluster.ws(p2, "/ws/admin", admin)
    kept = cluster.ws(p2, "/ws/admin", other_session)
    chat = cluster.join(p2, admin, room)
    deputy_views = [cluster.ws(node, "/ws/admin", deputy) for node in (p1, p2)]
    for ws in (view, kept, *deputy_views):
        assert recv(ws)["type"] == "stats"

    with httpx.Client(base_url=p1.url, headers=admin.headers, timeout=15) as http:
        assert http.post("/api/auth/logout").status_code == 204
    started = time.monotonic()
    assert closed_with(view, timeout=2).code == 1008
    assert closed_with(chat.ws, timeout=2).code == 1008
    assert time.monotonic() - started < 1.0
    assert recv(kept, 3)["type"] == "stats"

    asyncio.run(set_admin(False))
    started = time.monotonic()
    for ws in deputy_views:
        assert closed_with(ws, timeout=3).code == 1008
    assert time.monotonic() - started < 2.5
    assert recv(kept, 3)["type"] == "stats"


def test_a_sign_out_during_a_redis_outage_reaches_the_other_process_when_it_returns(
    make_cluster: Callable[..., Cluster], private_redis: RedisServer
) -> None:
    """A token signed out on process 1 while Redis is down (its event cannot be carried) has
    its socket on process 2 closed (1008) once Redis is back; another user's socket there is
    left alone (the control)."""
    cluster = make_cluster(broker_url=private_redis.url)
    p1, p2 = cluster.nodes
    ann, bob = cluster.register(p1), cluster.register(p1)
    room = cluster.create_room(p1, ann)
    a, b = cluster.join(p2, ann, room), cluster.join(p2, bob, room)

    private_redis.stop()
    for node in cluster.nodes:
        wait_until(lambda node=node: health(node.url) == 503, 5, f"{node.url} reports 503")
    with httpx.Client(base_url=p1.url, headers=ann.headers, timeout=15) as http:
        assert http.post("/api/auth/logout").status_code == 204
    # Nothing could carry the sign-out: the socket on process 2 still serves.
    assert a.send("still open while Redis is away")["user"] == ann.username

    private_redis.start()
    assert closed_with(a.ws, timeout=15).code == 1008
    assert b.send("still here")["user"] == bob.username
