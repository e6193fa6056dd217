"""Edits, deletions and reactions: the changes of stored messages (SPEC "Message lifecycle").

A change takes the next number of its room's sequence, the counter messages take their ids
from (`rooms.last_seq`), in the same kind of transaction as the message writer's: on
SQLite in the writer's own thread under BEGIN IMMEDIATE, on PostgreSQL with the room's row
locked. So a room's messages and changes commit strictly in sequence order, whichever
process makes them. The change is recorded in `message_changes` and in the message's
`change_seq`; after the commit its `update` event, carrying that number and the message's
whole new state, goes to every process, whose hub passes the room's events on in sequence
order. A client that has seen message M has therefore seen every change numbered below M,
and resuming with `since=M` needs only the messages up to M changed after M.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat import access, events, mentions
from chat.access import Action, Standing
from chat.batch import BatchSql
from chat.conversations import Conversations
from chat.db import Transactions
from chat.errors import Forbidden, MessageNotFound
from chat.events import RoomEvent
from chat.messages import Reactions, StoredMessage
from chat.models import User, utcnow
from chat.ratelimit import MessageLimiter

log = logging.getLogger(__name__)

NOT_YOURS_TO_EDIT = "only its author may edit a message"
NOT_YOURS_TO_DELETE = "only its author or the room's moderators may delete a message"
TOO_LATE = "the time for editing this message is over"


@dataclass(frozen=True, slots=True)
class Who:
    """Who asks for a change: what changing needs of a user."""

    id: int
    username: str
    username_key: str
    is_admin: bool


@dataclass(frozen=True, slots=True)
class _Change:
    kind: Literal["edit", "delete", "react"]
    room: str
    room_id: int
    message_id: int
    user_id: int
    body: str = ""
    emoji: str = ""
    on: bool = True
    # May delete others' messages (moderates the room).
    moderates: bool = False
    edit_window: timedelta = timedelta(0)


class _Sql:
    """Statements written with `?`, numbered for drivers that want `$1, $2...`."""

    def __init__(self, batch: BatchSql) -> None:
        self.batch = batch
        self._numbered = batch.dialect.paramstyle == "numeric_dollar"

    def __call__(self, statement: str) -> str:
        if not self._numbered:
            return statement
        parts = statement.split("?")
        return "".join(
            part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, start=1)
        )


def _apply(sql: _Sql, change: _Change, cursor: Any) -> tuple[StoredMessage, int] | None:
    """Make the change in the cursor's transaction: the message's new state and the change's
    number; None when it changes nothing (a reaction already there, or already gone)."""
    q, room_id, seq = sql, change.room_id, change.message_id
    lock = sql.batch.lock_rooms(1)
    if lock is not None:
        cursor.execute(lock, [room_id])
    cursor.execute(
        q(
            "SELECT m.user_id, u.username, m.body, m.ts, m.nonce, m.edited_at, m.deleted"
            " FROM messages AS m JOIN users AS u ON u.id = m.user_id"
            " WHERE m.room_id = ? AND m.seq = ?"
        ),
        [room_id, seq],
    )
    row = cursor.fetchone()
    if row is None or row[6]:
        raise MessageNotFound()
    author_id, username, body, ts, nonce, edited_at, _ = row
    ts = sql.batch.ts_out(ts)
    edited_at = None if edited_at is None else sql.batch.ts_out(edited_at)
    now = utcnow()
    if change.kind == "edit":
        if author_id != change.user_id:
            raise Forbidden(NOT_YOURS_TO_EDIT)
        if now - ts > change.edit_window:
            raise Forbidden(TOO_LATE)
    elif change.kind == "delete":
        if author_id != change.user_id and not change.moderates:
            raise Forbidden(NOT_YOURS_TO_DELETE)
    elif change.on:
        cursor.execute(
            q(
                "INSERT INTO reactions (room_id, message_seq, user_id, emoji, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING user_id"
            ),
            [room_id, seq, change.user_id, change.emoji, sql.batch.ts_in(now)],
        )
        if not cursor.fetchall():
            return None
    else:
        cursor.execute(
            q(
                "DELETE FROM reactions WHERE room_id = ? AND message_seq = ? AND user_id = ?"
                " AND emoji = ? RETURNING user_id"
            ),
            [room_id, seq, change.user_id, change.emoji],
        )
        if not cursor.fetchall():
            return None
    cursor.execute(
        q("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq"), [room_id]
    )
    number = cursor.fetchone()[0]
    cursor.execute(
        q("INSERT INTO message_changes (room_id, seq, message_seq) VALUES (?, ?, ?)"),
        [room_id, number, seq],
    )
    where = " WHERE room_id = ? AND seq = ?"
    of_message = " WHERE room_id = ? AND message_seq = ?"
    named: tuple[str, ...] = ()
    if change.kind == "edit":
        body, edited_at = change.body, now
        cursor.execute(
            q("UPDATE messages SET body = ?, edited_at = ?, change_seq = ?" + where),
            [body, sql.batch.ts_in(now), number, room_id, seq],
        )
        cursor.execute(q("DELETE FROM mentions" + of_message), [room_id, seq])
        named = mentions.record(cursor, sql.batch.dialect, room_id, seq, body)
    elif change.kind == "delete":
        # The body goes from the database too, not only from view.
        body = ""
        cursor.execute(
            q("UPDATE messages SET body = ?, deleted = ?, change_seq = ?" + where),
            ["", True, number, room_id, seq],
        )
        cursor.execute(q("DELETE FROM reactions" + of_message), [room_id, seq])
        cursor.execute(q("DELETE FROM mentions" + of_message), [room_id, seq])
        message = StoredMessage(seq, change.room, username, "", ts, nonce, edited_at, True)
        return message, number
    else:
        cursor.execute(q("UPDATE messages SET change_seq = ?" + where), [number, room_id, seq])
        cursor.execute(
            q(
                "SELECT u.username FROM mentions AS n JOIN users AS u ON u.id = n.user_id"
                " WHERE n.room_id = ? AND n.message_seq = ?"
            ),
            [room_id, seq],
        )
        named = tuple(sorted(name for (name,) in cursor.fetchall()))
    cursor.execute(
        q(
            "SELECT r.emoji, u.username FROM reactions AS r JOIN users AS u ON u.id = r.user_id"
            " WHERE r.room_id = ? AND r.message_seq = ? ORDER BY r.created_at, r.emoji"
        ),
        [room_id, seq],
    )
    reactions: Reactions = {}
    for emoji, name in cursor.fetchall():
        reactions.setdefault(emoji, []).append(name)
    for users in reactions.values():
        users.sort()
    message = StoredMessage(
        seq, change.room, username, body, ts, nonce, edited_at, False, reactions, named
    )
    return message, number


class Changes:
    """Edit, delete and react, by socket or REST: access decided by `chat.access`, counted
    against the user's message rate, made in one transaction, announced after its commit."""

    def __init__(
        self,
        transactions: Transactions,
        sessions: async_sessionmaker[AsyncSession],
        conversations: Conversations,
        limiter: MessageLimiter,
        publish: Callable[[RoomEvent], Awaitable[None]],
        edit_window: timedelta,
    ) -> None:
        self._transactions = transactions
        self._sql = _Sql(BatchSql(transactions.dialect))
        self._sessions = sessions
        self._conversations = conversations
        self._limiter = limiter
        self._publish = publish
        self._edit_window = edit_window

    async def who(self, user_id: int, username: str, username_key: str) -> Who:
        """The user as a change needs them, their admin flag read now (a socket's user may
        have been made or unmade admin since it opened)."""
        async with self._sessions() as session:
            is_admin = await session.scalar(select(User.is_admin).where(User.id == user_id))
        return Who(user_id, username, username_key, bool(is_admin))

    async def _admit(self, who: Who, room: str, action: Action) -> Standing:
        standing = await self._conversations.require(who, room, action)
        # Counted only once allowed: an outsider learns nothing from a 429.
        await self._limiter.acquire(who.username_key)
        return standing

    async def edit(self, who: Who, room: str, message_id: int, body: str) -> StoredMessage:
        """Edit the caller's own message within the edit window: its new state
        (RoomNotFound, MessageNotFound, Forbidden, RateLimited)."""
        standing = await self._admit(who, room, Action.POST)
        change = _Change(
            "edit",
            room,
            standing.room_id,
            message_id,
            who.id,
            body=body,
            edit_window=self._edit_window,
        )
        made = await self._make(change)
        assert made is not None
        return made

    async def delete(self, who: Who, room: str, message_id: int) -> None:
        """Delete the caller's own message, or any in a room they moderate (site admins
        moderate every public and private room)."""
        standing = await self._admit(who, room, Action.POST)
        try:
            access.check(standing, Action.MODERATE)
            moderates = True
        except Forbidden:
            moderates = False
        await self._make(
            _Change("delete", room, standing.room_id, message_id, who.id, moderates=moderates)
        )

    async def react(self, who: Who, room: str, message_id: int, emoji: str, on: bool) -> None:
        """Add (`on`) or take back the caller's reaction; doing what is already done is no
        change and sends nothing."""
        standing = await self._admit(who, room, Action.POST)
        await self._make(
            _Change("react", room, standing.room_id, message_id, who.id, emoji=emoji, on=on)
        )

    async def _make(self, change: _Change) -> StoredMessage | None:
        made = await self._transactions.run(partial(_apply, self._sql, change))
        if made is None:
            return None
        message, number = made
        # Only after the commit: a process that hears of it can find it in the database.
        try:
            await self._publish(events.update_event(message, number))
        except Exception:
            # Committed all the same: the hubs read it from the database when the next
            # event of the room shows them the gap.
            log.exception("publishing a change of %s failed", change.room)
        return message
