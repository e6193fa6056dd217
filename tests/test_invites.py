"""Invites: admins create, list and revoke them; each use lets one person register, until the
uses run out or the invite expires; the last use goes to exactly one of those racing for it."""

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from sqlalchemy import update

from chat.db import create_engine
from chat.models import Invite
from chat.settings import Settings
from tests.conftest import PASSWORD, Account, Server, make_settings, unique
from tests.test_cluster import Cluster, make_cluster  # noqa: F401  (the fixture)

# Registrations racing for one invite's last use.
RACERS = 6
# SQLite shows no lock waits to watch: the write lock is held this long instead.
SQLITE_HOLD_SECS = 2.0


def create_invite(url: str, admin: Account, **body: int) -> httpx.Response:
    return httpx.post(f"{url}/api/admin/invites", json=body, headers=admin.headers, timeout=15)


def new_invite(srv: Server, **body: int) -> dict[str, object]:
    assert srv.admin is not None
    r = create_invite(srv.url, srv.admin, **body)
    assert r.status_code == 201, r.text
    invite: dict[str, object] = r.json()
    return invite


def listed(srv: Server) -> dict[str, dict[str, object]]:
    assert srv.admin is not None
    r = httpx.get(f"{srv.url}/api/admin/invites", headers=srv.admin.headers, timeout=15)
    assert r.status_code == 200, r.text
    return {invite["code"]: invite for invite in r.json()}


def register(url: str, invite: object = None, username: str | None = None) -> httpx.Response:
    body = {"username": username or unique("inv"), "password": PASSWORD}
    if invite is not None:
        body["invite"] = str(invite)
    return httpx.post(f"{url}/api/auth/register", json=body, timeout=60)


@pytest.fixture(scope="module")
def invite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose registration is by invite; its first account is the admin."""
    srv = Server(make_settings(tmp_path_factory.mktemp("invite"), registration="invite"))
    srv.start()
    srv.admin = srv.register(unique("admin"))
    assert srv.admin.is_admin
    yield srv
    srv.stop()


def test_create_list_use_and_revoke(invite_server: Server) -> None:
    """A new invite has a 22+ character code, a link to the register page, one use and a week
    to live; it is listed, lets one person register, and is gone from the list once used.
    A revoked invite is unlisted and lets nobody in; revoking it again is 404."""
    srv = invite_server
    before = datetime.now(UTC)
    invite = new_invite(srv)
    code = str(invite["code"])
    assert len(code) >= 22
    assert invite["url"] == f"{srv.url}/register?invite={code}"
    assert invite["uses_left"] == 1
    expires = datetime.fromisoformat(str(invite["expires_at"]))
    assert before + timedelta(hours=167) < expires < before + timedelta(hours=169)
    assert listed(srv)[code]["uses_left"] == 1

    created = register(srv.url, code)
    assert created.status_code == 201, created.text
    assert created.json()["is_admin"] is False
    assert code not in listed(srv)
    assert register(srv.url, code).status_code == 403

    revoked = str(new_invite(srv)["code"])
    assert srv.admin is not None
    r = httpx.delete(f"{srv.url}/api/admin/invites/{revoked}", headers=srv.admin.headers)
    assert r.status_code == 204
    assert revoked not in listed(srv)
    assert register(srv.url, revoked).status_code == 403
    r = httpx.delete(f"{srv.url}/api/admin/invites/{revoked}", headers=srv.admin.headers)
    assert r.status_code == 404


def test_an_invite_of_several_uses(invite_server: Server) -> None:
    """Uses count down with each registration and stop at zero; a registration that fails
    (the name is taken) uses none."""
    srv = invite_server
    code = new_invite(srv, uses=2, expires_in_hours=1)["code"]
    first = unique("inv")
    assert register(srv.url, code, first).status_code == 201
    assert listed(srv)[str(code)]["uses_left"] == 1
    assert register(srv.url, code, first).status_code == 409
    assert listed(srv)[str(code)]["uses_left"] == 1
    assert register(srv.url, code).status_code == 201
    assert register(srv.url, code).status_code == 403


def test_an_expired_invite_lets_nobody_in(invite_server: Server) -> None:
    """An invite past its `expires_at` is refused and unlisted; a fresh one (the control)
    works."""
    srv = invite_server
    expired, fresh = str(new_invite(srv)["code"]), str(new_invite(srv)["code"])

    async def expire() -> None:
        engine = create_engine(srv.settings)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    update(Invite)
                    .where(Invite.code == expired)
                    .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                )
        finally:
            await engine.dispose()

    asyncio.run(expire())
    assert expired not in listed(srv)
    r = register(srv.url, expired)
    assert r.status_code == 403
    assert "expired" in r.json()["detail"]
    assert register(srv.url, fresh).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"uses": 0},
        {"uses": 1001},
        {"expires_in_hours": 0},
        {"expires_in_hours": 721},
        {"uses": "2"},
        {"other": 1},
    ],
)
def test_invite_bounds(invite_server: Server, body: dict[str, object]) -> None:
    """Uses are 1-1000 and lifetimes 1-720 hours, as integers; anything else is 422."""
    assert invite_server.admin is not None
    r = httpx.post(
        f"{invite_server.url}/api/admin/invites", json=body, headers=invite_server.admin.headers
    )
    assert r.status_code == 422, r.text


def test_invite_limits_and_defaults(invite_server: Server) -> None:
    """The largest invite is allowed, and no body at all means one use for 168 hours."""
    big = new_invite(invite_server, uses=1000, expires_in_hours=720)
    assert big["uses_left"] == 1000
    assert invite_server.admin is not None
    r = httpx.post(f"{invite_server.url}/api/admin/invites", headers=invite_server.admin.headers)
    assert r.status_code == 201, r.text
    assert r.json()["uses_left"] == 1


def test_invites_are_for_admins_only(invite_server: Server) -> None:
    """Members get 403 and strangers 401 on every invite call; an admin's call (the control)
    works."""
    srv = invite_server
    code = str(new_invite(srv)["code"])
    member_body = {"username": unique("member"), "password": PASSWORD, "invite": code}
    with httpx.Client(base_url=srv.url, timeout=15) as http:
        assert http.post("/api/auth/register", json=member_body).status_code == 201
        form = {"username": member_body["username"], "password": PASSWORD}
        token = http.post("/api/auth/token", data=form).json()["access_token"]
        other = str(new_invite(srv)["code"])
        for headers, expected in (({"Authorization": f"Bearer {token}"}, 403), ({}, 401)):
            assert http.post("/api/admin/invites", json={}, headers=headers).status_code == expected
            assert http.get("/api/admin/invites", headers=headers).status_code == expected
            r = http.delete(f"/api/admin/invites/{other}", headers=headers)
            assert r.status_code == expected
    assert other in listed(srv)


@pytest.mark.parametrize("code", ["", "nope", "a" * 64, "bad\x00code", "../x", "é"])
def test_bad_invite_codes_are_refused(invite_server: Server, code: str) -> None:
    """Unknown, empty or malformed codes: 403, never a server error."""
    r = register(invite_server.url, code)
    assert r.status_code == 403, r.text


class InviteHeld:
    """Holds the invite's row (PostgreSQL) or the database's write lock (SQLite) so that every
    racer has checked the invite and waits to take its use before any of them can: the
    widest the race can be."""

    def __init__(self, settings: Settings, code: str, waiters: int) -> None:
        self._settings, self._code, self._waiters = settings, code, waiters
        self._held = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def __enter__(self) -> "InviteHeld":
        self._thread.start()
        assert self._held.wait(10), "could not lock the invite"
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(30)
        assert not self._thread.is_alive(), "the lock was never released"

    def _hold(self) -> None:
        url = self._settings.database_url
        if url.startswith("postgresql"):
            asyncio.run(self._hold_row(url))
            return
        db = sqlite3.connect(self._settings.data_dir / "chat.db", isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            self._held.set()
            time.sleep(SQLITE_HOLD_SECS)
            db.execute("ROLLBACK")
        finally:
            db.close()

    async def _hold_row(self, url: str) -> None:
        conn = await asyncpg.connect(url)
        watcher = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM invites WHERE code = $1 FOR UPDATE", self._code)
                self._held.set()
                for _ in range(300):
                    waiting = await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    if waiting >= self._waiters:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await conn.close()
            await watcher.close()


def race(urls: list[str], code: str) -> list[int]:
    """RACERS registrations with the same invite at the same moment; their status codes."""
    barrier = threading.Barrier(RACERS)
    statuses: list[int] = []

    def one(url: str) -> None:
        barrier.wait()
        statuses.append(register(url, code).status_code)

    threads = [threading.Thread(target=one, args=(urls[i % len(urls)],)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


def test_one_use_goes_to_exactly_one_of_many(make_server: Callable[..., Server]) -> None:
    """Registrations racing for a one-use invite: one gets in, the others get 403."""
    srv = make_server(registration="invite")
    for _ in range(2):
        code = str(new_invite(srv)["code"])
        with InviteHeld(srv.settings, code, RACERS):
            statuses = race([srv.url], code)
        assert statuses == [201] + [403] * (RACERS - 1)


def test_one_use_goes_to_exactly_one_on_a_cluster(
    make_cluster: Callable[..., Cluster],  # noqa: F811  (the imported fixture)
) -> None:
    """The same race over two processes on one PostgreSQL database."""
    cluster = make_cluster(CHAT_REGISTRATION="invite")
    assert cluster.admin is not None
    r = create_invite(cluster.nodes[1].url, cluster.admin)
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    with InviteHeld(Settings(database_url=cluster.database_url), code, RACERS):
        statuses = race([node.url for node in cluster.nodes], code)
    assert statuses == [201] + [403] * (RACERS - 1)
