"""`chat backup`: a consistent copy of the SQLite database while the server runs."""

import contextlib
import os
import sqlite3
from pathlib import Path

from chat.db import SQLITE_BUSY_TIMEOUT_MS, SQLITE_FILE_MODE, sqlite_path
from chat.settings import Settings

POSTGRES_POINTER = (
    "chat backup copies SQLite databases; on PostgreSQL use pg_dump "
    "(e.g. pg_dump --format=custom --file=chat.dump DBNAME)"
)


class BackupError(Exception):
    """The backup was not made; the message says why, in one line."""


def backup_sqlite(settings: Settings, target: Path, replace: bool = False) -> int:
    """Copy the database to `target` (mode 0600) and return its size in bytes.

    The copy appears at `target` only once complete: it is written beside it under
    another name first. Without `replace`, an existing `target` is never overwritten.
    """
    source = sqlite_path(settings.async_database_url)
    if source is None or not source.is_file():
        raise BackupError(f"no SQLite database file at {source or settings.database_url}")
    target = target.absolute()
    if target.exists() and not replace:
        raise BackupError(f"{target} exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise BackupError(f"no directory {target.parent}")
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        # Created here, so that SQLite writes into a file only this user may read.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE))
    except OSError as exc:
        raise BackupError(f"cannot write {partial}: {exc.strerror}") from None
    try:
        _copy(source, partial)
        if replace:
            partial.replace(target)
        else:
            # link() fails, rather than overwrites, if the target appeared meanwhile.
            try:
                os.link(partial, target)
            except FileExistsError:
                raise BackupError(f"{target} exists; pass --force to replace it") from None
    except sqlite3.Error as exc:
        raise BackupError(f"the backup failed: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return target.stat().st_size


def _copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(source, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        dst = sqlite3.connect(target)
        try:
            # All pages in one step: one read transaction, which in WAL mode sees one
            # snapshot and never holds up the server's writer. Copied in several steps, a
            # write by the server between two of them would restart the copy, and under
            # steady load it might never finish.
            src.backup(dst, pages=-1)
            # The copy is one self-contained file, not a database waiting for its -wal.
            dst.execute("PRAGMA journal_mode=DELETE")
            problem = dst.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise BackupError(f"the copy does not pass quick_check: {problem}")
        finally:
            dst.close()
    finally:
        src.close()
