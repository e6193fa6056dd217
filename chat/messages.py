"""Messages: reading history, and the writer that stores them in grouped commits."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.errors import StorageUnavailable
from chat.models import Message, Room, User, utcnow

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


async def _take_seqs(session: AsyncSession, counts: dict[int, int]) -> dict[int, int]:
    """Advance each room's `last_seq` by its count; the new values, by room id.

    Two statements whatever the number of rooms: lock the rows in id order (so that
    two processes never wait on each other crosswise; SQLite locks the whole file
    and ignores FOR UPDATE), then move them all at once.
    """
    if not counts:
        return {}
    await session.execute(
        select(Room.id).where(Room.id.in_(counts)).order_by(Room.id).with_for_update()
    )
    result = await session.execute(
        update(Room)
        .where(Room.id.in_(counts))
        .values(last_seq=Room.last_seq + case(counts, value=Room.id))
        .returning(Room.id, Room.last_seq)
    )
    return {room_id: last for room_id, last in result.all()}


# Marks a nonce taken earlier in the same batch, until its message has its seq.
_PLACEHOLDER = StoredMessage(0, "", "", "", utcnow(), None)

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
                created = await self._commit(batch)
            except IntegrityError:
                # Another process stored one of these nonces in the meantime:
                # one transaction per message sorts out which.
                created = []
                for pending in batch:
                    created += await self._commit([pending])
        except Exception as exc:
            # Whatever went wrong, the writer must live on: every later message
            # would wait for it forever.
            log.error("storing %d messages failed: %r", len(batch), exc)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(StorageUnavailable())
            return
        # Let the callers' callbacks (repeated-nonce acknowledgements) run before
        # the broadcast, so that each sender hears back in the order it sent.
        await asyncio.sleep(0)
        if created:
            try:
                await self._on_stored(created)
            except Exception:
                log.exception("publishing stored messages failed")

    async def _commit(self, batch: list[_Pending]) -> list[StoredMessage]:
        """Store the batch in one transaction; a repeated nonce resolves to the stored message."""
        inserted: dict[int, StoredMessage] = {}  # id(pending) -> its new message
        by_nonce: dict[tuple[int, int, str], StoredMessage] = {}
        async with self._sessions() as session:
            by_nonce.update(await self._already_stored(session, batch))
            new_by_room: dict[int, list[_Pending]] = {}
            for pending in batch:
                key = pending.key
                if key is not None:
                    if key in by_nonce:
                        continue
                    by_nonce[key] = _PLACEHOLDER
                new_by_room.setdefault(pending.room_id, []).append(pending)
            rows: list[dict[str, Any]] = []
            last_seqs = await _take_seqs(
                session, {room_id: len(p) for room_id, p in new_by_room.items()}
            )
            for room_id, pendings in new_by_room.items():
                last = last_seqs[room_id]
                for seq, p in enumerate(pendings, start=last - len(pendings) + 1):
                    rows.append(
                        {
                            "room_id": room_id,
                            "seq": seq,
                            "user_id": p.user_id,
                            "body": p.body,
                            "nonce": p.nonce,
                            "ts": p.ts,
                        }
                    )
                    message = StoredMessage(seq, p.room, p.username, p.body, p.ts, p.nonce)
                    inserted[id(p)] = message
                    if p.key is not None:
                        by_nonce[p.key] = message
            if rows:
                await session.execute(insert(Message), rows)
            await session.commit()
        # Only now, after the commit, is any message acknowledged.
        for pending in batch:
            if pending.future.done():
                continue
            if id(pending) in inserted:
                pending.future.set_result((inserted[id(pending)], True))
            else:
                assert pending.key is not None
                pending.future.set_result((by_nonce[pending.key], False))
        return sorted(inserted.values(), key=lambda m: (m.room, m.id))

    async def _already_stored(
        self, session: AsyncSession, batch: list[_Pending]
    ) -> dict[tuple[int, int, str], StoredMessage]:
        keys = {p.key for p in batch if p.key is not None}
        if not keys:
            return {}
        rooms = {p.room_id: p.room for p in batch}
        rows = await session.execute(
            select(Message, User.username)
            .join(User, User.id == Message.user_id)
            .where(tuple_(Message.room_id, Message.user_id, Message.nonce).in_(list(keys)))
        )
        return {
            (m.room_id, m.user_id, m.nonce): StoredMessage(
                m.seq, rooms[m.room_id], username, m.body, m.ts, m.nonce
            )
            for m, username in rows
        }
