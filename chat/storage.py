"""Whether the database can take writes, and the answer when it cannot."""

import asyncio
import logging
import os
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import make_url, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection

from chat.settings import Settings

log = logging.getLogger(__name__)

# Below this much free space beside the SQLite file, health reports the database full:
# a commit needs room for its WAL frames, and a checkpoint for the pages it copies.
MIN_FREE_DISK_BYTES = 8 * 1024 * 1024
STORAGE_RETRY_AFTER_SECS = 10
STORAGE_UNAVAILABLE = "Storage is unavailable; try again later"
# A mistake in a query or a refused row is a bug or a conflict, not an outage.
_NOT_OUTAGES = (IntegrityError, DataError, ProgrammingError)


def sqlite_dir(settings: Settings) -> Path | None:
    """The directory of the SQLite file, or None for other databases and in-memory ones."""
    if not settings.is_sqlite:
        return None
    database = make_url(settings.async_database_url).database
    if not database or database == ":memory:":
        return None
    return Path(database).parent


def _has_room(directory: Path) -> bool:
    stat = os.statvfs(directory)
    if stat.f_flag & os.ST_RDONLY:
        return False
    return stat.f_bavail * stat.f_frsize >= MIN_FREE_DISK_BYTES


async def is_writable(settings: Settings, conn: AsyncConnection) -> bool:
    """Whether a write would be stored now: free disk space for SQLite, a primary that
    takes writes for PostgreSQL."""
    directory = sqlite_dir(settings)
    if directory is not None:
        writable = await asyncio.to_thread(_has_room, directory)
        if not writable:
            log.warning("database full or read-only: under %d bytes free", MIN_FREE_DISK_BYTES)
        return writable
    if settings.is_sqlite:
        return True
    read_only = await conn.scalar(text("SHOW transaction_read_only"))
    if read_only != "off":
        log.warning("database is read-only")
        return False
    return True


def is_outage(exc: DBAPIError) -> bool:
    """A failure of the database itself (full, read-only, unreachable), as opposed to a
    query it refused."""
    return not isinstance(exc, _NOT_OUTAGES)


async def storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After for a database that cannot store a write: nothing was stored,
    and the client may try again. The admins hear of it (`storage_unavailable`)."""
    if not isinstance(exc, DBAPIError) or not is_outage(exc):
        raise exc
    log.warning("storage unavailable: %s", exc.orig)
    request.app.state.services.alerts.storage_failed(str(exc.orig)[:200])
    return JSONResponse(
        {"detail": STORAGE_UNAVAILABLE},
        status_code=503,
        headers={"Retry-After": str(STORAGE_RETRY_AFTER_SECS)},
    )
