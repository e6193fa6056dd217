"""Registrations cannot starve sign-ins: limited per address and in all, behind sign-ins in the
hashing queue, and refused with 503 when that queue is full. Nor can they pass for another
account: names that look alike are refused."""

import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from chat import security
from chat.db import alembic_config, migrate
from chat.security import ARGON2_MEMORY_KIB
from tests.conftest import PASSWORD, Server, make_settings, unique

# Threads hashing at once: what may finish while a sign-in waits for a free one.
THREADS = getattr(security, "HASHING_THREADS", 1)
# More registrations at once than the hashing threads get through in a couple of seconds.
FLOOD = max(20, 8 * THREADS)
# A sign-in waits at most for the hashes already running; generous for a loaded machine.
SIGN_IN_BOUND_SECS = 5.0


def register(srv: Server, address: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    body = {"username": unique("reg"), "password": PASSWORD}
    return httpx.post(f"{srv.url}/api/auth/register", json=body, headers=headers, timeout=60)


def test_registrations_are_limited_per_address(make_server: Callable[..., Server]) -> None:
    """Past the burst an address gets 429 with Retry-After; another address is unaffected."""
    srv = make_server(register_burst=3, register_per_hour=1)
    # The admin's registration, from this address too, took one of the three.
    codes = [register(srv).status_code for _ in range(4)]
    assert codes == [201, 201, 429, 429]
    refused = register(srv)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert register(srv, "203.0.113.9").status_code == 201


def test_registrations_are_limited_in_all(make_server: Callable[..., Server]) -> None:
    """Registrations from many addresses together meet the server's own limit."""
    srv = make_server(register_global_burst=4, register_global_per_hour=1)
    codes = [register(srv, f"198.51.100.{i}").status_code for i in range(1, 7)]
    assert codes == [201, 201, 201, 429, 429, 429]


def test_registration_form_is_limited_per_address(make_server: Callable[..., Server]) -> None:
    srv = make_server(register_burst=1, register_per_hour=1)
    http = srv.client()
    csrf = http.get("/register").cookies["csrf_token"]
    form = {"username": unique("form"), "password": PASSWORD, "csrf_token": csrf}
    r = http.post("/register", data=form)
    assert r.status_code == 429
    assert "Too many registrations" in r.text


# Alone: how many registrations are hashed while the sign-in waits depends on the CPU it gets.
@pytest.mark.exclusive
def test_sign_in_goes_before_queued_registrations(make_server: Callable[..., Server]) -> None:
    """With a flood of registrations waiting to be hashed, a sign-in is hashed next, not last."""
    srv = make_server(hash_queue_max=1000, password_hash_memory_kib=ARGON2_MEMORY_KIB)
    admin = srv.admin
    assert admin is not None
    done: list[float] = []
    lock = threading.Lock()

    def flood_one() -> int:
        status = register(srv).status_code
        with lock:
            done.append(time.monotonic())
        return status

    with ThreadPoolExecutor(FLOOD) as pool:
        futures = [pool.submit(flood_one) for _ in range(FLOOD)]
        # A few hashed: every registration has long been sent and the rest are queued.
        deadline = time.monotonic() + 60
        while len(done) < 3:
            assert time.monotonic() < deadline, "registrations did not get hashed"
            time.sleep(0.01)
        with lock:
            before = len(done)
        start = time.monotonic()
        form = {"username": admin.username, "password": admin.password}
        r = httpx.post(f"{srv.url}/api/auth/token", data=form, timeout=60)
        took = time.monotonic() - start
        with lock:
            during = len(done) - before
        statuses = [f.result() for f in futures]
    assert r.status_code == 200, r.text
    assert statuses == [201] * FLOOD
    # First in, first out, the sign-in would wait for every registration queued before it.
    assert during <= THREADS + 5, f"{during} registrations were hashed while the sign-in waited"
    assert took < SIGN_IN_BOUND_SECS


def test_full_hashing_queue_gives_503(make_server: Callable[..., Server]) -> None:
    """Registrations beyond the hashing queue's bound get 503 + Retry-After, not a long wait."""
    srv = make_server(hash_queue_max=2, password_hash_memory_kib=ARGON2_MEMORY_KIB)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: register(srv), range(20)))
    codes = sorted(r.status_code for r in answers)
    assert set(codes) == {201, 503}, codes
    assert codes.count(201) >= 3
    busy = next(r for r in answers if r.status_code == 503)
    assert int(busy.headers["Retry-After"]) >= 1
    # Control: once the queue drains, registering works again.
    assert register(srv).status_code == 201


# --- look-alike names ----------------------------------------------------------------------


def test_look_alike_of_a_name_is_refused(server: Server) -> None:
    """`aIice` (capital i), `a1ice` and a Cyrillic-a `alice` cannot join beside `alice`."""
    tail = secrets.token_hex(3)
    first = httpx.post(
        f"{server.url}/api/auth/register",
        json={"username": f"alice{tail}", "password": PASSWORD},
        timeout=30,
    )
    assert first.status_code == 201, first.text
    for look_alike in (f"aIice{tail}", f"a1ice{tail}", f"ALlCE{tail}"):
        r = httpx.post(
            f"{server.url}/api/auth/register",
            json={"username": look_alike, "password": PASSWORD},
            timeout=30,
        )
        assert r.status_code == 409, (look_alike, r.text)
    # Control: a name that only starts alike is welcome.
    r = httpx.post(
        f"{server.url}/api/auth/register",
        json={"username": f"alicf{tail}", "password": PASSWORD},
        timeout=30,
    )
    assert r.status_code == 201, r.text


def test_migration_keeps_existing_look_alikes(tmp_path: Path) -> None:
    """Accounts that already look alike survive the upgrade: the oldest keeps the skeleton, the
    others get theirs suffixed with their id, and the unique index holds from then on."""
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'chat.db'}")
    command.upgrade(alembic_config(settings), "0002")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'chat.db'}")
    try:
        with engine.begin() as conn:
            for name in ("alice", "aIice", "bob"):
                conn.execute(
                    sa.text(
                        "INSERT INTO users (username, username_key, password_hash, is_admin)"
                        " VALUES (:name, :key, 'x', false)"
                    ),
                    {"name": name, "key": name.lower()},
                )
        migrate(settings)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, username, username_skeleton FROM users ORDER BY id")
            ).all()
            assert [(name, skeleton) for _, name, skeleton in rows] == [
                ("alice", "allce"),
                ("aIice", f"allce#{rows[1][0]}"),
                ("bob", "bob"),
            ]
            with pytest.raises(sa.exc.IntegrityError):
                conn.execute(
                    sa.text(
                        "INSERT INTO users (username, username_key, username_skeleton,"
                        " password_hash, is_admin) VALUES ('a1ice', 'a1ice', 'allce', 'x', false)"
                    )
                )
    finally:
        engine.dispose()
