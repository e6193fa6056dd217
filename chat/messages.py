"""Messages as stored: their size limits, and reading them back (history, the latest
seq, resuming after a seq). They are written by `chat.writer`."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chat.models import Message, Room, User

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200
RESUME_MAX_MESSAGES = 500


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    room: str
    user: str
    body: str
    ts: datetime
    nonce: str | None


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
