"""A database that cannot store writes (disk full, read-only): 503 with Retry-After for
every write, health says so, and nothing is half done."""

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import (
    PASSWORD,
    Account,
    Server,
    _run_async,
    need,
    new_postgres_database,
    unique,
)

DISK_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs: a real file system that really fills up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
            capture_output=True,
        ).returncode
        == 0
    )
    need(mounted, "permission to mount a tmpfs")
    try:
        yield mount_point
    finally:
        # Lazily: a server's threads may hold files open until they are collected.
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * CHUNK_BYTES)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert int(r.headers["retry-after"]) >= 1
    assert "unavailable" in r.json()["detail"]


def writes_refused_then_accepted(
    srv: Server, account: Account, outage: Callable[[], Callable[[], object]]
) -> None:
    """Every write during `outage()` (which returns the function ending it), and after."""
    http = srv.client(headers=account.headers)
    assert http.get("/healthz").status_code == 200
    end = outage()
    try:
        assert http.get("/healthz").status_code == 503
        newcomer = {"username": unique(), "password": PASSWORD}
        assert_unavailable(http.post("/api/auth/register", json=newcomer))
        assert_unavailable(http.post("/api/rooms", json={"name": unique("room-")}))
        # The sign-out was not stored, and says so: the token still works.
        assert_unavailable(http.post("/api/auth/logout"))
        assert http.get("/api/rooms").status_code == 200
    finally:
        end()
    assert http.get("/healthz").status_code == 200
    assert http.post("/api/auth/register", json=newcomer).status_code == 201
    assert http.post("/api/rooms", json={"name": unique("room-")}).status_code == 201
    assert http.post("/api/auth/logout").status_code == 204
    assert http.get("/api/rooms").status_code == 401


def test_full_disk_gives_503_and_unhealthy(
    small_disk: Path, make_server: Callable[..., Server]
) -> None:
    """On a full disk, registration, room creation and sign-out answer 503 with Retry-After
    (not 500), a sign-out that could not be stored leaves the token valid rather than
    failing silently, and /healthz is 503; once there is room again, all of them work."""
    srv = make_server(data_dir=small_disk, database_url="")
    account = srv.register()

    def outage() -> Callable[[], object]:
        return fill(small_disk).unlink

    writes_refused_then_accepted(srv, account, outage)


def test_read_only_postgresql_gives_503_and_unhealthy(make_server: Callable[..., Server]) -> None:
    """A PostgreSQL database that turned read-only (as a demoted primary does) gets the same
    503s and an unhealthy /healthz."""
    url = new_postgres_database()
    name = url.rsplit("/", 1)[1]
    srv = make_server(database_url=url)
    account = srv.register()

    async def read_only(on: bool) -> None:
        conn = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
        try:
            value = "on" if on else "off"
            await conn.execute(
                f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}'
            )
            # Open sessions keep their setting; the server's pool reconnects.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        finally:
            await conn.close()

    def outage() -> Callable[[], object]:
        _run_async(read_only(True))
        return lambda: _run_async(read_only(False))

    writes_refused_then_accepted(srv, account, outage)
