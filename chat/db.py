"""The database engine, its sessions, and schema migrations."""

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event, make_url
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection, Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from chat.settings import Settings

PROJECT_DIR = Path(__file__).resolve().parent.parent
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Messages and password hashes: for the server's user only. SQLite gives the -wal and
# -shm files the database file's mode.
SQLITE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.async_database_url
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _own_sqlite_files(settings.async_database_url)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )


def _sqlite_pragmas(
    dbapi_conn: DBAPIConnection | sqlite3.Connection, _record: ConnectionPoolEntry | None
) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers (history, login) run while the message writer commits.
    # synchronous=FULL fsyncs the WAL on every commit: a message is acknowledged
    # only after commit, so an acknowledged message survives power loss too.
    # Throughput comes from grouping many messages into one commit instead.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


T = TypeVar("T")
# The work of one transaction: plain DB-API calls on a cursor of the connection.
Work = Callable[[Any], T]


class Transactions(Protocol):
    """Runs a unit of database work in one transaction, off the event loop.

    The message writer's hot path speaks the driver's own SQL (see `dialect` for
    its placeholder style and value conversions) rather than building statements
    through SQLAlchemy, whose per-row work cost more than the database's.
    """

    # Read-only, so that an implementation may hold a narrower type (one dialect, its
    # driver's own exception class).
    @property
    def dialect(self) -> Dialect: ...

    # What the driver raises when a unique index refuses a row.
    @property
    def integrity_error(self) -> type[Exception]: ...

    async def run(self, work: Work[T]) -> T: ...

    async def close(self) -> None: ...


class ThreadTransactions:
    """SQLite: one `sqlite3` connection in one thread of its own.

    A transaction goes to the thread whole: one round trip through the event loop
    per transaction, not one per statement (on a busy loop each round trip waits
    for a whole loop iteration). BEGIN IMMEDIATE takes the write lock at once, so
    the transaction never has to upgrade a read lock, which SQLite may refuse with
    SQLITE_BUSY instead of waiting.
    """

    def __init__(self, settings: Settings) -> None:
        self.dialect = sqlite.dialect()
        self.integrity_error = sqlite3.IntegrityError
        self._url = make_url(settings.async_database_url)
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

    async def run(self, work: Work[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transaction, work)

    def _transaction(self, work: Work[T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn.cursor())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # Not when BEGIN itself failed.
                conn.execute("ROLLBACK")
            raise
        return result

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._url.database or ":memory:",
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            uri=bool(self._url.query.get("uri")),
            isolation_level=None,  # Transactions are begun and ended explicitly.
        )
        _sqlite_pragmas(conn, None)
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown()


class AsyncTransactions:
    """Other databases: the async engine's connection, its driver awaited statement by
    statement (SQLAlchemy's adapter gives it a DB-API face)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.dialect = engine.dialect
        self.integrity_error = engine.dialect.loaded_dbapi.IntegrityError
        self._engine = engine

    async def run(self, work: Work[T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(lambda sync: work(sync.connection.cursor()))

    async def close(self) -> None:
        pass  # The engine is the services', disposed with them.


def write_transactions(settings: Settings, engine: AsyncEngine) -> Transactions:
    """Where the message writer runs its transactions."""
    if settings.is_sqlite:
        return ThreadTransactions(settings)
    return AsyncTransactions(engine)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(settings: Settings) -> Config:
    config = Config(str(PROJECT_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = settings.async_database_url
    return config


def migrate(settings: Settings) -> None:
    """Bring the database schema to the newest migration (blocking; call before serving)."""
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _own_sqlite_files(settings.async_database_url)
        _check_sqlite_file(settings.async_database_url)
    command.upgrade(alembic_config(settings), "head")


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    path = parsed.database
    if not path or path == ":memory:" or parsed.query.get("uri"):
        return None
    return Path(path)


def _own_sqlite_files(url: str) -> None:
    """Create the SQLite file readable by this user only, before SQLite creates it with
    the umask's mode (often 0644), and take back files an older version left open."""
    path = sqlite_path(url)
    if path is None:
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE))
    for suffix in SQLITE_SIDE_FILES:
        # Absent, or not ours to change (a read-only copy): nothing to take back.
        with contextlib.suppress(OSError):
            os.chmod(f"{path}{suffix}", SQLITE_FILE_MODE)


def _check_sqlite_file(url: str) -> None:
    """Open the SQLite file once without aiosqlite, raising OSError if that cannot work.

    When aiosqlite fails to open a file, its worker thread outlives the event loop of
    the migration and prints a traceback; this reports the failure as one clear error.
    """
    path = sqlite_path(url)
    if path is None:
        return
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise OSError(f"{exc}: {path}") from None
