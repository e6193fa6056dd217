"""Alerts across two `chat serve` processes (PostgreSQL, a Redis of the test's own): each
kind raised for real on one node reaches the admin view open on the other and is stored;
a node killed without a word is reported `node_left` by the other within the presence
TTL, once."""

import socket
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import redis
from websockets.sync.client import ClientConnection

from chat.closecodes import CloseCode
from tests.conftest import PASSWORD, _run_async, recv, unique
from tests.test_cluster import (
    SHORT_PRESENCE_TTL_SECS,
    Cluster,
    RedisServer,
    make_cluster,  # noqa: F401  (the fixture)
    private_redis,  # noqa: F401  (the fixture)
    wait_until,
)
from tests.ws_helpers import closed_with, welcome

Frame = dict[str, Any]
# Time for a process to notice something (a broker gone, a database back) and say so.
NOTICE_SECS = 10.0


def next_alert(
    view: ClientConnection, kind: str, about: str = "", timeout: float = NOTICE_SECS
) -> Frame:
    """The next alert of `kind` whose detail names `about`, past every other frame."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind} alert within {timeout}s")
        frame = recv(view, remaining)
        if frame["type"] == "alert" and frame["kind"] == kind and about in frame["detail"]:
            return frame


async def _read_only(url: str, on: bool) -> None:
    """Turn the database read-only (a demoted primary) or back, for new sessions and old."""
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
    try:
        value = "on" if on else "off"
        await conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await conn.close()


def test_every_alert_kind_reaches_the_admin_view_of_the_other_node(
    make_cluster: Callable[..., Cluster],  # noqa: F811
    private_redis: RedisServer,  # noqa: F811
) -> None:
    cluster = make_cluster(
        private_redis.url,
        CHAT_PRESENCE_TTL_SECS=str(SHORT_PRESENCE_TTL_SECS),
        CHAT_LOGIN_FAILURES_BURST="2",
        CHAT_ABUSE_MAX_ERRORS="2",
        CHAT_STATS_PERIOD_SECS="1",
    )
    p1, p2 = cluster.nodes
    admin = cluster.admin
    assert admin is not None and p1.proc is not None and p2.proc is not None
    http2 = httpx.Client(base_url=p2.url, headers=admin.headers, timeout=15)

    def stored() -> list[Frame]:
        r = http2.get("/api/admin/alerts", params={"limit": 500})
        assert r.status_code == 200, r.text
        return list(r.json()["alerts"])

    host = socket.gethostname()[:50]
    name1, name2 = f"{host}:{p1.proc.pid}", f"{host}:{p2.proc.pid}"

    def joined() -> list[str]:
        return sorted(a["detail"] for a in stored() if a["kind"] == "node_joined")

    # Both nodes said they joined, each once.
    expected = sorted(f"node {name} joined the cluster" for name in (name1, name2))
    wait_until(lambda: joined() == expected, NOTICE_SECS, "both nodes joined")

    # The dashboard's history, asked of node 2, holds both nodes' points, and totals that
    # are their sums.
    def history() -> dict[str, Any]:
        r = http2.get("/api/admin/stats/history", params={"minutes": 5})
        assert r.status_code == 200, r.text
        return dict(r.json())

    wait_until(lambda: sorted(history()["nodes"]) == sorted([name1, name2]), NOTICE_SECS, "history")
    body = history()
    both = [{p["ts"]: p["connections"] for p in points} for points in body["nodes"].values()]
    for total in body["total"]:
        if all(total["ts"] in points for points in both):
            assert total["connections"] == sum(points[total["ts"]] for points in both)

    view = cluster.ws(p2, "/ws/admin", admin)
    assert recv(view)["type"] == "stats"

    # A registration on node 1.
    bob = cluster.register(p1, unique("bob"))
    assert bob.username in next_alert(view, "user_registered")["detail"]

    # Sign-ins throttled on node 1: one alert for the address however many are refused.
    form = {"username": bob.username, "password": "wrong password"}
    codes = [httpx.post(f"{p1.url}/api/auth/token", data=form).status_code for _ in range(5)]
    assert codes == [401, 401, 429, 429, 429]
    throttled = next_alert(view, "login_throttled")
    assert throttled["level"] == "warning"

    # An abusive socket closed on node 1.
    room = cluster.create_room(p1, bob)
    abuser = cluster.ws(p1, f"/ws/rooms/{room}", bob)
    welcome(abuser)
    for _ in range(3):
        abuser.send("not json")
    assert closed_with(abuser).code == CloseCode.TOO_MANY
    abuse = next_alert(view, "abuse_closed")
    assert bob.username in abuse["detail"]

    # The database turns read-only: node 1 fails a write and says so; then it recovers.
    _run_async(_read_only(cluster.database_url, True))
    try:
        r = httpx.post(
            f"{p1.url}/api/auth/register", json={"username": unique(), "password": PASSWORD}
        )
        assert r.status_code == 503, r.text
        down = next_alert(view, "storage_unavailable")
        assert down["level"] == "critical"
    finally:
        _run_async(_read_only(cluster.database_url, False))
    next_alert(view, "storage_recovered")

    # Redis goes away: node 2 (whose view this is) loses it, then has it again.
    private_redis.stop()
    broker_down = next_alert(view, "broker_down", name2)
    assert broker_down["level"] == "critical"
    private_redis.start()
    up = next_alert(view, "broker_up", name2)
    assert up["level"] == "info"

    # Node 1 dies without a word: node 2 reports it within the presence TTL (after the
    # grace it gives every node to beat again once Redis is back).
    beats = redis.Redis(port=private_redis.port)
    wait_until(
        lambda: bool(beats.hexists(f"{cluster.namespace}:node-beats", name1)),
        NOTICE_SECS,
        "node 1 beats again",
    )
    beats.close()
    p1.kill()
    left = next_alert(view, "node_left", name1, SHORT_PRESENCE_TTL_SECS * 2 + NOTICE_SECS)
    assert left["level"] == "warning" and "stopped answering" in left["detail"]

    kept = stored()
    ids = {a["id"] for a in kept}
    for alert in (throttled, abuse, down, broker_down, up, left):
        assert alert["id"] in ids, alert
    kinds = [a["kind"] for a in kept]
    assert kinds.count("login_throttled") == 1
    assert [a for a in kept if a["kind"] == "node_left"] == [left], [
        a["detail"] for a in kept if a["kind"] == "node_left"
    ]
