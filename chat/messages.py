"""Messages as stored: their size limits, and reading them back (history, the latest
seq, resuming after a seq, the changes after a seq). They are written by `chat.writer`
and changed by `chat.changes`."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import Row, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat.models import Mention, Message, MessageChange, Reaction, Room, User

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200
RESUME_MAX_MESSAGES = 500
# Updates a resuming socket is sent at most; beyond, it starts over as when truncated.
RESUME_MAX_UPDATES = 500

Reactions = dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    room: str
    user: str
    body: str
    ts: datetime
    nonce: str | None
    edited_at: datetime | None = None
    # A deleted message keeps its id, author and time; its body is "".
    deleted: bool = False
    # {emoji: [usernames, sorted]}
    reactions: Reactions = field(default_factory=dict)
    # The usernames it mentions, sorted.
    mentions: tuple[str, ...] = ()


def format_ts(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _columns() -> Select[int, str, str, datetime, str | None, datetime | None, bool]:
    return select(
        Message.seq,
        User.username,
        Message.body,
        Message.ts,
        Message.nonce,
        Message.edited_at,
        Message.deleted,
    ).join(User, User.id == Message.user_id)


async def _with_details(
    session: AsyncSession,
    room_id: int,
    room: str,
    rows: Sequence[Row[int, str, str, datetime, str | None, datetime | None, bool]],
) -> list[StoredMessage]:
    """The rows as messages, with their reactions and mentions: two queries for the whole
    page, never one per message."""
    if not rows:
        return []
    seqs = [row[0] for row in rows]
    low, high = min(seqs), max(seqs)
    # A page's ids are close together: a range reads the index in one sweep. Scattered
    # ones (changed messages) are looked up one by one.
    dense = high - low < 2 * len(seqs)
    in_reactions = (
        Reaction.message_seq.between(low, high) if dense else Reaction.message_seq.in_(seqs)
    )
    in_mentions = Mention.message_seq.between(low, high) if dense else Mention.message_seq.in_(seqs)
    reactions: dict[int, Reactions] = {}
    found = await session.execute(
        select(Reaction.message_seq, Reaction.emoji, User.username)
        .join(User, User.id == Reaction.user_id)
        .where(Reaction.room_id == room_id, in_reactions)
        .order_by(Reaction.message_seq, Reaction.created_at, Reaction.emoji)
    )
    wanted = set(seqs)
    for seq, emoji, username in found:
        if seq in wanted:
            reactions.setdefault(seq, {}).setdefault(emoji, []).append(username)
    for by_emoji in reactions.values():
        for users in by_emoji.values():
            users.sort()
    mentions: dict[int, list[str]] = {}
    for seq, mentioned in await session.execute(
        select(Mention.message_seq, User.username)
        .join(User, User.id == Mention.user_id)
        .where(Mention.room_id == room_id, in_mentions)
    ):
        if seq in wanted:
            mentions.setdefault(seq, []).append(mentioned)
    return [
        StoredMessage(
            seq,
            room,
            username,
            body,
            ts,
            nonce,
            edited_at,
            bool(deleted),
            reactions.get(seq, {}),
            tuple(sorted(mentions.get(seq, ()))),
        )
        for seq, username, body, ts, nonce, edited_at, deleted in rows
    ]


async def history(
    session: AsyncSession,
    room_id: int,
    room: str,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = HISTORY_DEFAULT_LIMIT,
) -> list[StoredMessage]:
    """Up to `limit` messages in their current state, oldest first: the newest ones, or
    those just before `before`, or those just after `after`."""
    query = _columns().where(Message.room_id == room_id)
    if before is not None:
        query = query.where(Message.seq < before)
    if after is not None:
        query = query.where(Message.seq > after).order_by(Message.seq).limit(limit)
    else:
        query = query.order_by(Message.seq.desc()).limit(limit)
    rows = list((await session.execute(query)).all())
    if after is None:
        rows.reverse()
    return await _with_details(session, room_id, room, rows)


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


async def changed_since(
    session: AsyncSession, room_id: int, room: str, since: int
) -> list[StoredMessage] | None:
    """The current state of every message up to `since` changed after `since` (by the
    room's sequence), each once, oldest message first; None if more than
    RESUME_MAX_UPDATES (the client had better start over). Read after the history, so that
    it reflects every change numbered below the history's newest message."""
    query = (
        _columns()
        .where(Message.room_id == room_id, Message.seq <= since, Message.change_seq > since)
        .order_by(Message.seq)
        .limit(RESUME_MAX_UPDATES + 1)
    )
    rows = (await session.execute(query)).all()
    if len(rows) > RESUME_MAX_UPDATES:
        return None
    return await _with_details(session, room_id, room, rows)


async def events_after(
    session: AsyncSession, room_id: int, room: str, after: int, limit: int
) -> list[tuple[int, StoredMessage, bool]]:
    """The room's sequence after `after`, ascending and without gaps as far as it goes:
    (seq, message in its current state, whether seq is a change of it rather than the
    message itself). What a process that missed events reads to pass them on in order."""
    new = await history(session, room_id, room, after=after, limit=limit)
    changes = list(
        (
            await session.execute(
                select(MessageChange.seq, MessageChange.message_seq)
                .where(MessageChange.room_id == room_id, MessageChange.seq > after)
                .order_by(MessageChange.seq)
                .limit(limit)
            )
        ).all()
    )
    # Each list is complete up to its last seq only if it was cut short by the limit.
    end: int | None = None
    if len(new) >= limit:
        end = new[-1].id
    if len(changes) >= limit:
        end = changes[-1][0] if end is None else min(end, changes[-1][0])
    found: list[tuple[int, StoredMessage, bool]] = [(m.id, m, False) for m in new]
    if changes:
        changed_ids = sorted({message_seq for _, message_seq in changes})
        current = {m.id: m for m in new}
        missing = [i for i in changed_ids if i not in current]
        if missing:
            rows = (
                await session.execute(
                    _columns().where(Message.room_id == room_id, Message.seq.in_(missing))
                )
            ).all()
            for message in await _with_details(session, room_id, room, list(rows)):
                current[message.id] = message
        for seq, message_seq in changes:
            if message_seq in current:
                found.append((seq, current[message_seq], True))
    found.sort(key=lambda item: item[0])
    if end is not None:
        found = [item for item in found if item[0] <= end]
    return found


def tombstone(message: StoredMessage) -> StoredMessage:
    return replace(message, body="", deleted=True, reactions={}, mentions=())
