"""The first account of an empty database is the only admin, however many register at once."""

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx

from tests.conftest import PASSWORD, Server, make_settings, unique
from tests.test_cluster import Cluster, make_cluster  # noqa: F401  (the fixture)

TRIALS = 3
# Registrations racing in each trial, spread over the nodes.
RACERS = 4


def race(urls: list[str]) -> list[bool]:
    """Register RACERS accounts at the same moment; whether each became admin."""
    barrier = threading.Barrier(RACERS)
    admins: list[bool] = []

    def register(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            body = {"username": unique("first"), "password": PASSWORD}
            barrier.wait()
            r = http.post("/api/auth/register", json=body)
        assert r.status_code == 201, r.text
        admins.append(r.json()["is_admin"])

    threads = [
        threading.Thread(target=register, args=(urls[i % len(urls)],)) for i in range(RACERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admins) == RACERS
    return admins


class InsertsHeld:
    """Holds a lock on `users` that lets reads through but makes every insert wait, until as
    many sessions wait on locks as there are racers: so that all of them have looked at the
    table before any has written to it, the widest the race can be."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._locked = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._hold(),), daemon=True)

    def __enter__(self) -> "InsertsHeld":
        self._thread.start()
        assert self._locked.wait(10), "could not lock the users table"
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(30)
        assert not self._thread.is_alive(), "the lock was never released"

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self._url)
        watcher = await asyncpg.connect(self._url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                self._locked.set()
                for _ in range(300):
                    waiting = await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    if waiting >= RACERS:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await conn.close()
            await watcher.close()


def test_first_registrations_on_a_fresh_cluster_make_one_admin(
    make_cluster: Callable[..., Cluster],  # noqa: F811  (the imported fixture)
) -> None:
    """Two processes registering the first accounts at once on one PostgreSQL database."""
    cluster = make_cluster()

    async def empty_users() -> None:
        conn = await asyncpg.connect(cluster.database_url)
        try:
            await conn.execute("DELETE FROM users")
        finally:
            await conn.close()

    for _ in range(TRIALS):
        asyncio.run(empty_users())
        with InsertsHeld(cluster.database_url):
            admins = race([node.url for node in cluster.nodes])
        assert admins.count(True) == 1, admins


def test_first_registrations_on_a_fresh_server_make_one_admin(tmp_path: Path) -> None:
    """One server, several first registrations at once (on SQLite, writes take turns and the
    one statement that inserts decides admin)."""
    for trial in range(TRIALS):
        srv = Server(make_settings(tmp_path / str(trial)))
        srv.start()
        try:
            admins = race([srv.url])
            assert admins.count(True) == 1, admins
        finally:
            srv.stop()


def test_the_first_admin_owns_general(make_server: Callable[..., Server]) -> None:
    """`general` comes with the database, ownerless; the first account, the admin, owns it.
    Later accounts, admins made later included, do not."""
    srv = make_server()
    assert srv.admin is not None
    later = srv.register()
    with httpx.Client(base_url=srv.url, timeout=15) as http:
        first = http.get("/api/rooms/general", headers=srv.admin.headers).json()
        other = http.get("/api/rooms/general", headers=later.headers).json()
        members = http.get("/api/rooms/general/members", headers=later.headers).json()
    assert (first["role"], first["is_member"]) == ("owner", True)
    assert (other["role"], other["is_member"]) == (None, False)
    assert members == [{"username": srv.admin.username, "role": "owner"}]
