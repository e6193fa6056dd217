"""The SQLite database and its WAL are readable by the server's user only."""

import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chat.db import migrate
from chat.settings import Settings
from tests.conftest import Server, of_type, recv_until
from tests.ws_helpers import welcome

FILES = ("chat.db", "chat.db-wal", "chat.db-shm")


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems start services with, under which files are made 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_and_wal_are_created_0600(
    usual_umask: None, make_server: Callable[..., Server]
) -> None:
    """A fresh data dir: after sign-ups and a message, chat.db and its -wal and -shm files
    exist, each with mode 0600."""
    srv = make_server(database_url="", copy_migrated=False)
    account = srv.register()
    with srv.ws("/ws/rooms/general", account) as ws:
        welcome(ws)
        ws.send('{"type":"message","body":"hello"}')
        recv_until(ws, of_type("message"))
    modes = {name: oct(mode(srv.settings.data_dir / name)) for name in FILES}
    assert modes == dict.fromkeys(FILES, oct(0o600))


def test_existing_open_database_is_made_0600(usual_umask: None, tmp_path: Path) -> None:
    """A database an older version left 0644 is 0600 once migrated again."""
    settings = Settings(data_dir=tmp_path, secret_key=secrets.token_urlsafe(48))
    migrate(settings)
    (tmp_path / "chat.db").chmod(0o644)
    migrate(settings)
    assert mode(tmp_path / "chat.db") == 0o600
