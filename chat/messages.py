"""Messages: reading history, and the writer that stores them in grouped commits."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.errors import StorageUnavailable
from chat.models import Message, User, utcnow

BODY_MAX_CHARS = 4000
NONCE_MAX_CHARS = 64
HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200
RESUME_MAX_MESSAGES = 500
# Messages grouped into one transaction at most; one fsync then acknowledges them all.
WRITE_BATCH_MAX = 512

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    room: str
    user: str
    body: str
    ts: datetime
    nonce: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room": self.room,
            "user": self.user,
            "body": self.body,
            "ts": format_ts(self.ts),
            "nonce": self.nonce,
        }


def format_ts(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def history(
    session: AsyncSession,
    room_id: int,
    room: str,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = HISTORY_DEFAULT_LIMIT,
) -> list[StoredMessage]:
    """Up to `limit` messages, oldest first: the newest ones, or those just before
    `before`, or those just after `after`."""
    query = (
        select(Message.id, User.username, Message.body, Message.ts, Message.nonce)
        .join(User, User.id == Message.user_id)
        .where(Message.room_id == room_id)
    )
    if before is not None:
        query = query.where(Message.id < before)
    if after is not None:
        query = query.where(Message.id > after).order_by(Message.id).limit(limit)
    else:
        query = query.order_by(Message.id.desc()).limit(limit)
    rows = (await session.execute(query)).all()
    messages = [StoredMessage(r.id, room, r.username, r.body, r.ts, r.nonce) for r in rows]
    if after is None:
        messages.reverse()
    return messages


async def resume(
    session: AsyncSession, room_id: int, room: str, since: int
) -> tuple[list[StoredMessage], bool]:
    """Every message after `since`; only the newest RESUME_MAX_MESSAGES if more (then True)."""
    missed = await history(session, room_id, room, after=since, limit=RESUME_MAX_MESSAGES + 1)
    if len(missed) <= RESUME_MAX_MESSAGES:
        return missed, False
    return await history(session, room_id, room, limit=RESUME_MAX_MESSAGES), True


@dataclass(slots=True)
class _Pending:
    room: str
    room_id: int
    user_id: int
    username: str
    body: str
    nonce: str | None
    ts: datetime = field(default_factory=utcnow)
    future: asyncio.Future[tuple[StoredMessage, bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def key(self) -> tuple[int, int, str] | None:
        return None if self.nonce is None else (self.room_id, self.user_id, self.nonce)


OnStored = Callable[[list[StoredMessage]], Awaitable[None]]


class MessageWriter:
    """The one path by which messages are stored.

    Callers wait for their message's commit. While one commit runs, the next
    messages queue up and go into the following transaction together, so the
    number of fsyncs grows with the commit rate, not the message rate.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], on_stored: OnStored) -> None:
        self._sessions = sessions
        self._on_stored = on_stored
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-writer")

    async def stop(self) -> None:
        """Store everything already submitted, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task
        self._task = None

    async def store(
        self, room: str, room_id: int, user_id: int, username: str, body: str, nonce: str | None
    ) -> tuple[StoredMessage, bool]:
        """Store a message; returns it and whether it is new (False: a repeated nonce)."""
        if self._task is None:
            raise StorageUnavailable()
        pending = _Pending(room, room_id, user_id, username, body, nonce)
        self._queue.put_nowait(pending)
        return await pending.future

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch: list[_Pending] = []
            item = first
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= WRITE_BATCH_MAX or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            try:
                created = await self._commit(batch)
            except IntegrityError:
                # Another process stored one of these nonces in the meantime:
                # one transaction per message sorts out which.
                created = []
                for pending in batch:
                    created += await self._commit([pending])
        except (SQLAlchemyError, OSError) as exc:
            log.error("storing %d messages failed: %s", len(batch), exc)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(StorageUnavailable())
            return
        if created:
            try:
                await self._on_stored(created)
            except Exception:
                log.exception("publishing stored messages failed")

    async def _commit(self, batch: list[_Pending]) -> list[StoredMessage]:
        """Insert the batch in one transaction, resolving repeated nonces to the stored message."""
        keys = {p.key for p in batch if p.key is not None}
        async with self._sessions() as session:
            existing: dict[tuple[int, int, str], Message] = {}
            if keys:
                rows = await session.scalars(
                    select(Message).where(
                        tuple_(Message.room_id, Message.user_id, Message.nonce).in_(list(keys))
                    )
                )
                existing = {(m.room_id, m.user_id, m.nonce): m for m in rows}  # type: ignore[misc]
            rows_for: list[tuple[_Pending, Message, bool]] = []
            for pending in batch:
                key = pending.key
                row = existing.get(key) if key is not None else None
                is_new = row is None
                if row is None:
                    row = Message(
                        room_id=pending.room_id,
                        user_id=pending.user_id,
                        body=pending.body,
                        nonce=pending.nonce,
                        ts=pending.ts,
                    )
                    session.add(row)
                    if key is not None:
                        existing[key] = row
                rows_for.append((pending, row, is_new))
            await session.commit()
        created: list[StoredMessage] = []
        for pending, row, is_new in rows_for:
            message = StoredMessage(
                row.id, pending.room, pending.username, row.body, row.ts, row.nonce
            )
            if is_new:
                created.append(message)
            if not pending.future.done():
                pending.future.set_result((message, is_new))
        return created
