"""The first account of an empty database is the only admin, however many register at once."""

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx

from tests.conftest import PASSWORD, Server, make_settings, unique
from tests.test_cluster import Cluster, make_cluster  # noqa: F401  (the fixture)

TRIALS = 6
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
        admins = race([node.url for node in cluster.nodes])
        assert admins.count(True) == 1, admins


def test_first_registrations_on_a_fresh_server_make_one_admin(tmp_path: Path) -> None:
    """One server, several first registrations at once."""
    for trial in range(3):
        srv = Server(make_settings(tmp_path / str(trial)))
        srv.start()
        try:
            admins = race([srv.url])
            assert admins.count(True) == 1, admins
        finally:
            srv.stop()
