"""Messages: reading history, and the writer that stores them in grouped commits."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from chat.db import Transactions
from chat.errors import StorageUnavailable
from chat.models import Message, Room, User, utcnow

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
        select(Message.seq, User.username, Message.body, Message.ts, Message.nonce)
        .join(User, User.id == Message.user_id)
        .where(Message.room_id == room_id)
    )
    if before is not None:
        query = query.where(Message.seq < before)
    if after is not None:
        query = query.where(Message.seq > after).order_by(Message.seq).limit(limit)
    else:
        query = query.order_by(Message.seq.desc()).limit(limit)
    rows = (await session.execute(query)).all()
    messages = [StoredMessage(r.seq, room, r.username, r.body, r.ts, r.nonce) for r in rows]
    if after is None:
        messages.reverse()
    return messages


async def latest_seq(session: AsyncSession, room_id: int) -> int:
    return await session.scalar(select(Room.last_seq).where(Room.id == room_id)) or 0


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


class _BatchSql:
    """The writer's statements in one driver's own SQL: its placeholders, and the
    column type's conversions of timestamps both ways."""

    def __init__(self, dialect: Dialect) -> None:
        self._numbered = dialect.paramstyle == "numeric_dollar"
        self._is_sqlite = dialect.name == "sqlite"
        ts_type = Message.__table__.c.ts.type.dialect_impl(dialect)
        self.ts_in: Callable[[Any], Any] = ts_type.bind_processor(dialect) or _same
        self.ts_out: Callable[[Any], Any] = ts_type.result_processor(dialect, None) or _same

    def _groups(self, count: int, width: int, first: int = 1) -> list[str]:
        """`count` groups of `width` comma-separated placeholders, numbered from `first`."""
        if not self._numbered:
            return [",".join("?" * width)] * count
        marks = [f"${n}" for n in range(first, first + count * width)]
        return [",".join(marks[i : i + width]) for i in range(0, len(marks), width)]

    def _rows(self, count: int, width: int, first: int = 1) -> str:
        return ",".join(f"({group})" for group in self._groups(count, width, first))

    def stored_with_nonce(self, keys: int) -> str:
        # One equality per key: both databases look each up in the unique index,
        # where a row-value IN made SQLite scan the whole table.
        terms = " OR ".join(
            "(m.room_id = {} AND m.user_id = {} AND m.nonce = {})".format(*group.split(","))
            for group in self._groups(keys, 3)
        )
        return (
            "SELECT m.room_id, m.user_id, m.nonce, m.seq, m.body, m.ts, u.username"
            f" FROM messages AS m JOIN users AS u ON u.id = m.user_id WHERE {terms}"
        )

    def lock_rooms(self, rooms: int) -> str | None:
        """Lock the rooms' rows in id order, so that two processes never wait on each
        other crosswise; None on SQLite, whose BEGIN IMMEDIATE took the whole file."""
        if self._is_sqlite:
            return None
        ids = ",".join(self._groups(rooms, 1))
        return f"SELECT id FROM rooms WHERE id IN ({ids}) ORDER BY id FOR UPDATE"

    def take_seqs(self, rooms: int) -> str:
        # The cast types the count for PostgreSQL, which would take it for text.
        whens = " ".join(
            "WHEN {} THEN CAST({} AS BIGINT)".format(*group.split(","))
            for group in self._groups(rooms, 2)
        )
        ids = ",".join(self._groups(rooms, 1, first=2 * rooms + 1))
        return (
            f"UPDATE rooms SET last_seq = last_seq + CASE id {whens} END"
            f" WHERE id IN ({ids}) RETURNING id, last_seq"
        )

    def insert_messages(self, count: int) -> str:
        return (
            "INSERT INTO messages (room_id, seq, user_id, body, nonce, ts)"
            f" VALUES {self._rows(count, 6)}"
        )


def _same(value: Any) -> Any:
    return value


# Marks a nonce taken earlier in the same batch, until its message has its seq.
_PLACEHOLDER = StoredMessage(0, "", "", "", utcnow(), None)


def _store_batch(
    sql: _BatchSql, batch: list[_Pending], cursor: Any
) -> list[tuple[StoredMessage, bool]]:
    """Store the batch in the cursor's transaction: for each message, the stored message
    and whether it is new; a repeated nonce gives the message stored before.

    A handful of statements whatever the batch's size, each sending all its rows at
    once: the writer's thread gives the event loop's thread the interpreter back on
    each statement, and has to wait to get it again.
    """
    by_nonce = _already_stored(sql, batch, cursor)
    new_by_room: dict[int, list[_Pending]] = {}
    for pending in batch:
        key = pending.key
        if key is not None:
            if key in by_nonce:
                continue
            by_nonce[key] = _PLACEHOLDER
        new_by_room.setdefault(pending.room_id, []).append(pending)
    if not new_by_room:
        return [(by_nonce[p.key], False) for p in batch if p.key is not None]
    rooms = sorted(new_by_room)
    lock = sql.lock_rooms(len(rooms))
    if lock is not None:
        cursor.execute(lock, rooms)
    counts = [value for room_id in rooms for value in (room_id, len(new_by_room[room_id]))]
    cursor.execute(sql.take_seqs(len(rooms)), [*counts, *rooms])
    last_seqs = dict(cursor.fetchall())
    inserted: dict[int, StoredMessage] = {}  # id(pending) -> its new message
    values: list[Any] = []
    for room_id, pendings in new_by_room.items():
        last = last_seqs[room_id]
        for seq, p in enumerate(pendings, start=last - len(pendings) + 1):
            values += (room_id, seq, p.user_id, p.body, p.nonce, sql.ts_in(p.ts))
            message = StoredMessage(seq, p.room, p.username, p.body, p.ts, p.nonce)
            inserted[id(p)] = message
            if p.key is not None:
                by_nonce[p.key] = message
    cursor.execute(sql.insert_messages(len(inserted)), values)
    return [
        (inserted[id(p)], True) if id(p) in inserted else (by_nonce[p.key], False)  # type: ignore[index]
        for p in batch
    ]


def _already_stored(
    sql: _BatchSql, batch: list[_Pending], cursor: Any
) -> dict[tuple[int, int, str], StoredMessage]:
    keys = list({p.key for p in batch if p.key is not None})
    if not keys:
        return {}
    cursor.execute(sql.stored_with_nonce(len(keys)), [v for key in keys for v in key])
    rooms = {p.room_id: p.room for p in batch}
    return {
        (room_id, user_id, nonce): StoredMessage(
            seq, rooms[room_id], username, body, sql.ts_out(ts), nonce
        )
        for room_id, user_id, nonce, seq, body, ts, username in cursor.fetchall()
    }


OnStored = Callable[[list[StoredMessage]], Awaitable[None]]


class MessageWriter:
    """The one path by which messages are stored.

    Callers wait for their message's commit. While one commit runs, the next
    messages queue up and go into the following transaction together, so the
    number of fsyncs grows with the commit rate, not the message rate.
    """

    def __init__(self, transactions: Transactions, on_stored: OnStored) -> None:
        self._transactions = transactions
        self._sql = _BatchSql(transactions.dialect)
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

    def submit(
        self, room: str, room_id: int, user_id: int, username: str, body: str, nonce: str | None
    ) -> asyncio.Future[tuple[StoredMessage, bool]]:
        """Queue a message; the future gives it and whether it is new (False: a repeated
        nonce) once committed. Messages are stored in the order they are submitted."""
        if self._task is None:
            raise StorageUnavailable()
        pending = _Pending(room, room_id, user_id, username, body, nonce)
        self._queue.put_nowait(pending)
        return pending.future

    async def store(
        self, room: str, room_id: int, user_id: int, username: str, body: str, nonce: str | None
    ) -> tuple[StoredMessage, bool]:
        """Store a message and wait for its commit."""
        return await self.submit(room, room_id, user_id, username, body, nonce)

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
                results = await self._transactions.run(partial(_store_batch, self._sql, batch))
            except self._transactions.integrity_error:
                # Another process stored one of these nonces in the meantime:
                # one transaction per message sorts out which.
                results = []
                for pending in batch:
                    results += await self._transactions.run(
                        partial(_store_batch, self._sql, [pending])
                    )
        except Exception as exc:
            # Whatever went wrong, the writer must live on: every later message
            # would wait for it forever.
            log.error("storing %d messages failed: %r", len(batch), exc)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(StorageUnavailable())
            return
        # Only now, after the commit, is any message acknowledged.
        created: list[StoredMessage] = []
        for pending, (message, is_new) in zip(batch, results, strict=True):
            if is_new:
                created.append(message)
            if not pending.future.done():
                pending.future.set_result((message, is_new))
        # Let the callers' callbacks (repeated-nonce acknowledgements) run before
        # the broadcast, so that each sender hears back in the order it sent.
        await asyncio.sleep(0)
        if created:
            created.sort(key=lambda m: (m.room, m.id))
            try:
                await self._on_stored(created)
            except Exception:
                log.exception("publishing stored messages failed")
