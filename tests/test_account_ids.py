"""Account ids are never reused, and a token only works for the account it was issued to."""

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from chat.db import alembic_config, migrate
from chat.settings import Settings
from tests.conftest import Server, new_postgres_database, run_sql
from tests.ws_helpers import closed_with, signed, welcome

DATABASES = ["sqlite", "postgresql"]


def database_url(kind: str) -> str:
    return new_postgres_database() if kind == "postgresql" else ""


def rooms_status(server: Server, token: str) -> int:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        return http.get("/api/rooms", headers={"Authorization": f"Bearer {token}"}).status_code


@pytest.mark.parametrize("kind", DATABASES)
def test_deleted_users_token_does_not_sign_in_as_the_next_user(
    make_server: Callable[..., Server], kind: str
) -> None:
    """Delete the newest account and register another: the new account gets a fresh id, and
    the deleted account's token is refused (401, and 1008 on a socket)."""
    srv = make_server(database_url=database_url(kind))
    gone = srv.register()
    assert rooms_status(srv, gone.token) == 200
    run_sql(srv, f"DELETE FROM users WHERE id = {gone.id}")
    newcomer = srv.register()
    assert newcomer.id > gone.id
    assert rooms_status(srv, newcomer.token) == 200
    assert rooms_status(srv, gone.token) == 401
    with srv.ws("/ws/rooms/general", gone) as ws:
        assert closed_with(ws).code == 1008


def test_token_must_carry_its_accounts_key(server: Server) -> None:
    """A correctly signed token without the account's token key, or with another account's,
    gets 401 and 1008; with the account's own key it is accepted (control)."""
    account, other = server.register(), server.register()
    key, now = server.settings.signing_key(), int(time.time())
    claims = {"sub": str(account.id), "iat": now, "exp": now + 300, "sid": account.sid}
    assert rooms_status(server, signed(key, **claims, tkey=account.token_key)) == 200
    refused = {
        "no key": signed(key, **claims),
        "another account's key": signed(key, **claims, tkey=other.token_key),
        "a made-up key": signed(key, **claims, tkey=secrets.token_urlsafe(16)),
    }
    for case, token in refused.items():
        assert rooms_status(server, token) == 401, case
        with server.ws("/ws/rooms/general", token=token) as ws:
            assert closed_with(ws).code == 1008, case
    with server.ws("/ws/rooms/general", account) as ws:
        welcome(ws)


def test_migration_keeps_data_and_stops_sqlite_reusing_ids(tmp_path: Path) -> None:
    """Upgrading a database from before token keys keeps every account, room and message,
    gives each account its own key, and from then on SQLite never reuses a deleted id."""
    settings = Settings(data_dir=tmp_path, secret_key=secrets.token_urlsafe(48))
    config = alembic_config(settings)
    command.upgrade(config, "0002")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'chat.db'}")
    try:
        with engine.begin() as conn:
            for n in (1, 2, 3):
                conn.execute(
                    sa.text(
                        "INSERT INTO users (id, username, username_key, password_hash, is_admin)"
                        " VALUES (:n, :name, :name, 'x', false)"
                    ),
                    {"n": n, "name": f"user{n}"},
                )
            conn.execute(
                sa.text(
                    "INSERT INTO messages (room_id, seq, user_id, body, ts)"
                    " VALUES (1, 1, 3, 'hello', '2026-01-01 00:00:00')"
                )
            )
        migrate(settings)
        with engine.begin() as conn:
            keys = dict(conn.execute(sa.text("SELECT id, token_key FROM users")).all())
            assert sorted(keys) == [1, 2, 3]
            assert len(set(keys.values())) == 3 and all(keys.values())
            assert conn.scalar(sa.text("SELECT body FROM messages")) == "hello"
            assert conn.scalar(sa.text("SELECT name FROM rooms")) == "general"
            conn.execute(sa.text("DELETE FROM messages"))
            conn.execute(sa.text("DELETE FROM users WHERE id = 3"))
            conn.execute(
                sa.text(
                    "INSERT INTO users (username, username_key, password_hash, is_admin,"
                    " token_key) VALUES ('new', 'new', 'x', false, 'k')"
                )
            )
            ids = list(conn.scalars(sa.text("SELECT id FROM users ORDER BY id")))
        assert ids == [1, 2, 4]
    finally:
        engine.dispose()
