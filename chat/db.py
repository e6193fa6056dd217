"""The database engine, its sessions, and schema migrations."""

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from chat.settings import Settings

PROJECT_DIR = Path(__file__).resolve().parent.parent
SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.async_database_url
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
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


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
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
        _check_sqlite_file(settings.async_database_url)
    command.upgrade(alembic_config(settings), "head")


def _check_sqlite_file(url: str) -> None:
    """Open the SQLite file once without aiosqlite, raising OSError if that cannot work.

    When aiosqlite fails to open a file, its worker thread outlives the event loop of
    the migration and prints a traceback; this reports the failure as one clear error.
    """
    parsed = make_url(url)
    path = parsed.database
    if not path or path == ":memory:" or parsed.query.get("uri"):
        return
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise OSError(f"{exc}: {path}") from None
