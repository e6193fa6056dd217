"""Alerts and the dashboard's history on one server: `GET /api/admin/alerts` and
`/api/admin/stats/history` (auth and bounds), the noisy kinds raised once per incident,
the stored alerts bounded, and a full disk's `storage_unavailable`, kept in memory while
nothing can be stored, and stored with `storage_recovered` once the disk has room."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from chat import alerts
from chat.closecodes import CloseCode
from tests.conftest import PASSWORD, Account, Server, recv, unique
from tests.test_storage_failure import assert_unavailable, fill, small_disk  # noqa: F401
from tests.ws_helpers import closed_with, welcome

Frame = dict[str, Any]
ALERT_KEYS = {"type", "id", "level", "kind", "detail", "ts"}
POINT_KEYS = {"ts", "connections", "messages_per_sec", "deliveries_per_sec", "loop_lag_p99_ms"}


def next_alert(view: ClientConnection, kind: str, timeout: float = 10) -> Frame:
    """The next alert of `kind` on an admin view, past stats frames and other alerts."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind} alert within {timeout}s")
        frame = recv(view, remaining)
        if frame["type"] == "alert" and frame["kind"] == kind:
            assert set(frame) == ALERT_KEYS, frame
            return frame


def alerts_seen(view: ClientConnection, until: Callable[[Frame], bool]) -> list[Frame]:
    """Every alert on the view up to and including the first that `until` accepts."""
    seen: list[Frame] = []
    deadline = time.monotonic() + 10
    while True:
        frame = recv(view, max(deadline - time.monotonic(), 0.01))
        if frame["type"] == "alert":
            seen.append(frame)
            if until(frame):
                return seen


def stored(srv: Server, limit: int = 500) -> list[Frame]:
    assert srv.admin is not None
    r = srv.client(headers=srv.admin.headers).get("/api/admin/alerts", params={"limit": limit})
    assert r.status_code == 200, r.text
    return list(r.json()["alerts"])


def sign_in(srv: Server, username: str, password: str) -> int:
    form = {"username": username, "password": password}
    return httpx.post(f"{srv.url}/api/auth/token", data=form, timeout=30).status_code


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def test_admin_alerts_and_history_routes_refuse_strangers_and_bad_bounds(
    server: Server, user: Account
) -> None:
    """401 without a token, 403 for a non-admin, 422 for a limit or a span out of range."""
    assert server.admin is not None
    admin = server.client(headers=server.admin.headers)
    for path in ("/api/admin/alerts", "/api/admin/stats/history"):
        assert server.client().get(path).status_code == 401
        assert server.client(headers=user.headers).get(path).status_code == 403
        assert admin.get(path).status_code == 200
    for limit in ("0", "501", "-1", "x", "1.5"):
        r = admin.get("/api/admin/alerts", params={"limit": limit})
        assert r.status_code == 422, (limit, r.text)
        assert r.json()["detail"][0]["loc"] == ["query", "limit"]
    for minutes in ("0", "1441", "x"):
        r = admin.get("/api/admin/stats/history", params={"minutes": minutes})
        assert r.status_code == 422, (minutes, r.text)
        assert r.json()["detail"][0]["loc"] == ["query", "minutes"]
    assert admin.get("/api/admin/alerts", params={"limit": 500}).status_code == 200
    r = admin.get("/api/admin/stats/history", params={"minutes": 1440})
    assert r.status_code == 200 and r.json()["minutes"] == 1440


def test_alerts_live_and_stored_once_per_incident_and_bounded(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration is an alert; a throttled sign-in and an abusive socket are one alert
    each however often they repeat within the window; `GET /api/admin/alerts` has them
    newest first; beyond the cap the oldest stored alerts go."""
    srv = make_server(
        login_failures_burst=2, abuse_max_errors=2, ws_frames_burst=8, ws_frames_per_sec=1
    )
    assert srv.admin is not None
    with srv.ws("/ws/admin", srv.admin) as view:
        newcomer = srv.register(unique("new"))
        registered = next_alert(view, "user_registered")
        assert registered["level"] == "info" and newcomer.username in registered["detail"]

        codes = [sign_in(srv, newcomer.username, "wrong password") for _ in range(6)]
        assert codes == [401, 401, 429, 429, 429, 429]
        assert sign_in(srv, newcomer.username, PASSWORD) == 429
        for _ in range(2):
            with srv.ws("/ws/rooms/general", newcomer) as abuser:
                welcome(abuser)
                for _ in range(3):
                    abuser.send("not json")
                assert closed_with(abuser).code == CloseCode.TOO_MANY
        # Frames too fast (`chat.wsprotocol` closes it) are abuse too: another user's.
        flooder = srv.register(unique("flood"))
        with srv.ws("/ws/rooms/general", flooder) as flooding:
            welcome(flooding)
            for _ in range(20):
                try:
                    flooding.send('{"type":"typing"}')
                except ConnectionClosed:
                    # Closed before the 20th: the server read them faster than they were sent.
                    break
            assert closed_with(flooding).code == CloseCode.TOO_MANY
        # The positive control: an alert raised after all of them arrives after them.
        marker = srv.register(unique("marker"))
        seen = alerts_seen(view, lambda a: marker.username in a["detail"])
        kinds = [a["kind"] for a in seen]
        assert kinds.count("login_throttled") == 1, seen
        assert kinds.count("abuse_closed") == 2, seen
        throttled = next(a for a in seen if a["kind"] == "login_throttled")
        assert throttled["level"] == "warning" and "127.0.0.1" in throttled["detail"]
        abuse, flood = (a for a in seen if a["kind"] == "abuse_closed")
        assert abuse["level"] == "warning" and newcomer.username in abuse["detail"]
        assert flood["detail"].endswith("too many frames") and flooder.username in flood["detail"]

    wait_for(lambda: marker.username in stored(srv)[0]["detail"], "the marker stored")
    kept = stored(srv)
    assert kept[0]["kind"] == "user_registered"
    assert [a["ts"] for a in kept] == sorted((a["ts"] for a in kept), reverse=True)
    assert {a["id"] for a in seen} <= {a["id"] for a in kept}
    assert [a["kind"] for a in kept].count("login_throttled") == 1
    assert [a["kind"] for a in kept].count("abuse_closed") == 2
    assert stored(srv, limit=1) == kept[:1]

    monkeypatch.setattr(alerts, "KEEP_ALERTS", 3)
    last = [srv.register(unique("late")) for _ in range(4)][-1]
    wait_for(lambda: last.username in stored(srv)[0]["detail"], "the last one stored")
    assert len(stored(srv)) == 3


def test_stats_history_has_a_point_per_period_per_node_and_in_total(
    make_server: Callable[..., Server],
) -> None:
    """The history's points carry every figure, per node and in total; messages posted to a
    room with a socket open show as messages and deliveries per second."""
    srv = make_server(stats_period_secs=1)
    assert srv.admin is not None
    admin = srv.client(headers=srv.admin.headers)
    room = srv.create_room(srv.admin)

    def busy_point() -> bool:
        r = admin.get("/api/admin/stats/history", params={"minutes": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        return any(p["messages_per_sec"] > 0 and p["deliveries_per_sec"] > 0 for p in body["total"])

    with srv.ws(f"/ws/rooms/{room}", srv.admin) as reader:
        welcome(reader)
        for i in range(10):
            r = admin.post(f"/api/rooms/{room}/messages", json={"body": f"m{i}"})
            assert r.status_code == 201, r.text
        wait_for(busy_point, "a point with messages and deliveries")
    body = admin.get("/api/admin/stats/history").json()
    assert body["minutes"] == 60
    assert len(body["nodes"]) == 1
    (points,) = body["nodes"].values()
    assert points and all(set(p) == POINT_KEYS for p in points)
    assert all(set(p) == POINT_KEYS for p in body["total"])
    assert [p["ts"] for p in points] == sorted(p["ts"] for p in points)
    # One node: its points are the totals.
    assert points == body["total"]
    assert any(p["connections"] >= 1 for p in points)


def test_full_disk_alert_is_pushed_at_once_and_stored_when_the_disk_has_room(
    small_disk: Path,  # noqa: F811
    make_server: Callable[..., Server],
) -> None:
    """With the disk full, `storage_unavailable` reaches the admin view at once though
    nothing can be stored; with room again, `storage_recovered` follows, and both are in
    `GET /api/admin/alerts`, the first with the time it happened."""
    srv = make_server(data_dir=small_disk, database_url="")
    assert srv.admin is not None
    with srv.ws("/ws/admin", srv.admin) as view:
        filler = fill(small_disk)
        try:
            newcomer = {"username": unique(), "password": PASSWORD}
            assert_unavailable(srv.client().post("/api/auth/register", json=newcomer))
            down = next_alert(view, "storage_unavailable")
            assert down["level"] == "critical"
        finally:
            filler.unlink()
        up = next_alert(view, "storage_recovered")
        assert up["level"] == "info" and up["ts"] >= down["ts"]
    wait_for(lambda: stored(srv)[0]["id"] == up["id"], "storage_recovered stored")
    kept = stored(srv)
    assert [a["id"] for a in kept[:2]] == [up["id"], down["id"]]
    assert kept[1]["ts"] == down["ts"]
    assert [a["kind"] for a in kept].count("storage_unavailable") == 1
