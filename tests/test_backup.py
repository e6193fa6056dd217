"""`chat backup`: a consistent copy of a running server's SQLite database."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, make_settings, unique
from tests.test_cli import assert_one_line_error, finish, run_chat, start_chat
from tests.test_metrics import wait_for
from tests.ws_helpers import busy


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # SQLite whatever CHAT_TEST_DATABASE says: the backup is SQLite's.
    srv = Server(
        make_settings(
            tmp_path_factory.mktemp("backup"),
            database_url="",
            rate_burst=10**6,
            rate_per_sec=10**6,
        )
    )
    srv.start()
    srv.admin = srv.register(unique("admin"))
    yield srv
    srv.stop()


def _ids(path: Path, room: str) -> set[int]:
    """The ids (numbers in their room) of the room's messages in the database at `path`."""
    query = "SELECT seq FROM messages JOIN rooms ON rooms.id = room_id WHERE rooms.name = ?"
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute(query, (room,))}


def test_backup_under_write_load(sqlite_server: Server, tmp_path: Path) -> None:
    """While messages keep being posted, the copy holds every message acknowledged before
    the backup started, opens, and passes integrity_check; it is 0600 and self-contained."""
    srv = sqlite_server
    assert srv.admin is not None
    poster = srv.register()
    room = srv.create_room(poster)
    target = tmp_path / "copy.db"
    data_dir = srv.settings.data_dir
    with busy(srv, poster, room, threads=2) as posted:
        wait_for(lambda: len(posted) >= 50)
        acknowledged = set(posted)
        result = run_chat("backup", str(target), data_dir=data_dir)
        after_backup = len(posted)
        # The load went on: more were acknowledged while the backup ran and after it.
        wait_for(lambda: len(posted) >= after_backup + 20)
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout
    copied = _ids(target, room)
    assert acknowledged <= copied
    assert len(copied) < len(_ids(data_dir / "chat.db", room))  # The server wrote on after it.
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert target.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("copy.db-*"))


def test_backup_never_overwrites_unless_forced(sqlite_server: Server, tmp_path: Path) -> None:
    """An existing file is kept as it is, with one line saying what to do; --force replaces it."""
    data_dir = sqlite_server.settings.data_dir
    target = tmp_path / "existing.db"
    target.write_bytes(b"precious")
    refused = run_chat("backup", str(target), data_dir=data_dir)
    assert refused.returncode == 2
    assert "--force" in assert_one_line_error(refused)
    assert target.read_bytes() == b"precious"
    target.chmod(0o644)
    forced = run_chat("backup", "--force", str(target), data_dir=data_dir)
    assert forced.returncode == 0, forced.stderr
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # The server's database, not the file that was there.
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] >= 1
    assert target.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("*.partial"))


def test_backup_refusals(tmp_path: Path) -> None:
    """PostgreSQL: one line pointing to pg_dump, nothing written. No database or no such
    directory: one line each."""
    empty = tmp_path / "empty"
    empty.mkdir()
    started = {
        "postgresql": start_chat(
            "backup",
            str(tmp_path / "pg.db"),
            data_dir=empty,
            CHAT_DATABASE_URL="postgresql://chat:secret@127.0.0.1:1/chat",
        ),
        "no database": start_chat("backup", str(tmp_path / "none.db"), data_dir=empty),
    }
    results = {name: finish(process) for name, process in started.items()}
    line = assert_one_line_error(results["postgresql"])
    assert results["postgresql"].returncode == 2
    assert "pg_dump" in line and "secret" not in line
    assert "no SQLite database" in assert_one_line_error(results["no database"])
    assert not (tmp_path / "pg.db").exists() and not (tmp_path / "none.db").exists()
