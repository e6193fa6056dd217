"""One grouped commit of messages, in the database driver's own SQL.

The message writer hands a batch of pending messages to `store_batch`, which runs
inside one transaction on a DB-API cursor: it looks up repeated nonces, takes each
room's next sequence numbers, and inserts the new rows.

On SQLite each of those statements takes the whole batch as one JSON parameter, read with
`json_each`: one text per statement whatever the batch's size, so that each stays
prepared, and the rows are taken apart by SQLite itself, which does it without holding
Python's interpreter. Elsewhere the rows are the statements' own parameters.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.engine.interfaces import Dialect

from chat import mentions
from chat.messages import StoredMessage
from chat.models import Message, utcnow


@dataclass(slots=True)
class Pending:
    """A message waiting for its commit; its future gives the stored message and
    whether it is new."""

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


# Statement texts kept at most (a few MB at the longest batches).
_TEXTS_KEPT = 1024


class BatchSql:
    """The writer's statements in one driver's own SQL: its placeholders, and the
    column type's conversions of timestamps both ways."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._numbered = dialect.paramstyle == "numeric_dollar"
        self._is_sqlite = dialect.name == "sqlite"
        ts_type = Message.__table__.c.ts.type.dialect_impl(dialect)
        self.ts_in: Callable[[Any], Any] = ts_type.bind_processor(dialect) or _same
        self.ts_out: Callable[[Any], Any] = ts_type.result_processor(dialect, None) or _same
        if self._is_sqlite and self.ts_in(_SAMPLE_TS) == _sqlite_ts(_SAMPLE_TS):
            # The same text as SQLAlchemy's SQLite DATETIME, for a UTC time (every
            # message's), at a fraction of its cost: it formats every message's.
            self.ts_in = _sqlite_ts
        # Each statement's text by its size: a batch's sizes repeat, and building the text
        # of one with hundreds of placeholders cost more per message than running it.
        self._texts: dict[tuple[str, int], str] = {}

    def _groups(self, count: int, width: int, first: int = 1) -> list[str]:
        """`count` groups of `width` comma-separated placeholders, numbered from `first`."""
        if not self._numbered:
            return [",".join("?" * width)] * count
        marks = [f"${n}" for n in range(first, first + count * width)]
        return [",".join(marks[i : i + width]) for i in range(0, len(marks), width)]

    def _rows(self, count: int, width: int, first: int = 1) -> str:
        return ",".join(f"({group})" for group in self._groups(count, width, first))

    def _text(self, kind: str, count: int, build: Callable[[int], str]) -> str:
        text = self._texts.get((kind, count))
        if text is None:
            text = build(count)
            if len(self._texts) < _TEXTS_KEPT:
                self._texts[kind, count] = text
        return text

    def stored_with_nonce(self, keys: int) -> str:
        return self._text("nonce", keys, self._stored_with_nonce)

    def _stored_with_nonce(self, keys: int) -> str:
        # One equality per key: both databases look each up in the unique index,
        # where a row-value IN made SQLite scan the whole table.
        terms = " OR ".join(
            "(m.room_id = {} AND m.user_id = {} AND m.nonce = {})".format(*group.split(","))
            for group in self._groups(keys, 3)
        )
        return (
            "SELECT m.room_id, m.user_id, m.nonce, m.seq, m.body, m.ts, u.username,"
            " m.edited_at, m.deleted"
            f" FROM messages AS m JOIN users AS u ON u.id = m.user_id WHERE {terms}"
        )

    def lock_rooms(self, rooms: int) -> str | None:
        """Lock the rooms' rows in id order, so that two processes never wait on each
        other crosswise; None on SQLite, whose BEGIN IMMEDIATE took the whole file."""
        if self._is_sqlite:
            return None
        return self._text("lock", rooms, self._lock_rooms)

    def _lock_rooms(self, rooms: int) -> str:
        ids = ",".join(self._groups(rooms, 1))
        return f"SELECT id FROM rooms WHERE id IN ({ids}) ORDER BY id FOR UPDATE"

    def take_seqs(self, rooms: int) -> str:
        return self._text("seqs", rooms, self._take_seqs)

    def _take_seqs(self, rooms: int) -> str:
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
        return self._text("insert", count, self._insert_messages)

    def _insert_messages(self, count: int) -> str:
        return (
            "INSERT INTO messages (room_id, seq, user_id, body, nonce, ts)"
            f" VALUES {self._rows(count, 6)}"
        )

    def find_nonces(self, cursor: Any, keys: list[tuple[int, int, str]]) -> list[Any]:
        """The stored messages with these (room id, user id, nonce) keys, as rows of
        room_id, user_id, nonce, seq, body, ts, username, edited_at, deleted."""
        if self._is_sqlite:
            cursor.execute(SQLITE_FIND_NONCES, [_json(keys)])
        else:
            cursor.execute(self.stored_with_nonce(len(keys)), [v for key in keys for v in key])
        return list(cursor.fetchall())

    def take_seqs_of(self, cursor: Any, counts: dict[int, int]) -> dict[int, int]:
        """Advance each room's sequence by its count; each room's new last number. The
        rooms are locked first (PostgreSQL; SQLite's BEGIN IMMEDIATE took the file)."""
        rooms = sorted(counts)
        if self._is_sqlite:
            cursor.execute(_SQLITE_TAKE_SEQS, [_json([[r, counts[r]] for r in rooms])])
            # Read back in one row: each row a statement returns is a step of SQLite's,
            # and each step gives up the interpreter, which this thread must wait to get back.
            cursor.execute(_SQLITE_LAST_SEQS, [_json(rooms)])
            found: dict[str, int] = orjson.loads(cursor.fetchone()[0])
            return {int(room_id): seq for room_id, seq in found.items()}
        lock = self.lock_rooms(len(rooms))
        if lock is not None:
            cursor.execute(lock, rooms)
        values = [value for room_id in rooms for value in (room_id, counts[room_id])]
        cursor.execute(self.take_seqs(len(rooms)), [*values, *rooms])
        return dict(cursor.fetchall())

    def insert(self, cursor: Any, rows: list[tuple[Any, ...]]) -> None:
        """Insert messages: rows of room_id, seq, user_id, body, nonce, ts (as `ts_in`
        gives it)."""
        if self._is_sqlite:
            cursor.execute(_SQLITE_INSERT, [_json(rows)])
        else:
            cursor.execute(self.insert_messages(len(rows)), [v for row in rows for v in row])


# Each element of the JSON parameter is an array; `json_extract(value, '$[N]')` is its
# Nth item as an SQL value (text unescaped, null as NULL). `->>` would need SQLite 3.38.
def _item(n: int) -> str:
    return f"json_extract(k.value, '$[{n}]')"


# The keys drive the join (CROSS JOIN keeps that order), each looked up in the unique index.
SQLITE_FIND_NONCES = (
    "SELECT m.room_id, m.user_id, m.nonce, m.seq, m.body, m.ts, u.username,"
    " m.edited_at, m.deleted"
    " FROM json_each(?) AS k CROSS JOIN messages AS m JOIN users AS u ON u.id = m.user_id"
    f" WHERE m.room_id = {_item(0)} AND m.user_id = {_item(1)} AND m.nonce = {_item(2)}"
)
_SQLITE_TAKE_SEQS = (
    f"UPDATE rooms SET last_seq = last_seq + {_item(1)} FROM json_each(?) AS k"
    f" WHERE rooms.id = {_item(0)}"
)
_SQLITE_LAST_SEQS = (
    "SELECT json_group_object(id, last_seq) FROM rooms WHERE id IN (SELECT value FROM json_each(?))"
)
_SQLITE_INSERT = (
    "INSERT INTO messages (room_id, seq, user_id, body, nonce, ts)"
    f" SELECT {', '.join(_item(n) for n in range(6))} FROM json_each(?) AS k"
)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _same(value: Any) -> Any:
    return value


def _sqlite_ts(ts: datetime) -> str:
    # "2026-01-02 03:04:05.678901": the offset (UTC's, +00:00) cut off.
    return ts.isoformat(" ", "microseconds")[:26]


_SAMPLE_TS = datetime(2026, 1, 2, 3, 4, 5, 0, UTC)


# Marks a nonce taken earlier in the same batch, until its message has its seq.
_PLACEHOLDER = StoredMessage(0, "", "", "", utcnow(), None)


def store_batch(
    sql: BatchSql, batch: list[Pending], cursor: Any
) -> list[tuple[StoredMessage, bool]]:
    """Store the batch in the cursor's transaction: for each message, the stored message
    and whether it is new; a repeated nonce gives the message stored before.

    A handful of statements whatever the batch's size, each sending all its rows at
    once: the writer's thread gives the event loop's thread the interpreter back on
    each statement, and has to wait to get it again.
    """
    by_nonce = _already_stored(sql, batch, cursor)
    new_by_room: dict[int, list[Pending]] = {}
    for pending in batch:
        key = pending.key
        if key is not None:
            if key in by_nonce:
                continue
            by_nonce[key] = _PLACEHOLDER
        new_by_room.setdefault(pending.room_id, []).append(pending)
    if not new_by_room:
        return [(by_nonce[p.key], False) for p in batch if p.key is not None]
    last_seqs = sql.take_seqs_of(
        cursor, {room_id: len(pendings) for room_id, pendings in new_by_room.items()}
    )
    inserted: dict[int, StoredMessage] = {}  # id(pending) -> its new message
    rows: list[tuple[Any, ...]] = []
    ts_in = sql.ts_in
    for room_id, pendings in new_by_room.items():
        last = last_seqs[room_id]
        for seq, p in enumerate(pendings, start=last - len(pendings) + 1):
            rows.append((room_id, seq, p.user_id, p.body, p.nonce, ts_in(p.ts)))
            message = StoredMessage(seq, p.room, p.username, p.body, p.ts, p.nonce)
            inserted[id(p)] = message
            if p.key is not None:
                by_nonce[p.key] = message
    sql.insert(cursor, rows)
    for p in batch:
        # Only a body with an '@' may mention anyone: any other costs no query.
        if id(p) in inserted and "@" in p.body:
            message = inserted[id(p)]
            named = mentions.record(cursor, sql.dialect, p.room_id, message.id, p.body)
            if named:
                inserted[id(p)] = message = replace(message, mentions=named)
                if p.key is not None:
                    by_nonce[p.key] = message
    return [
        (inserted[id(p)], True) if id(p) in inserted else (by_nonce[p.key], False)  # type: ignore[index]
        for p in batch
    ]


def _already_stored(
    sql: BatchSql, batch: list[Pending], cursor: Any
) -> dict[tuple[int, int, str], StoredMessage]:
    keys = list({p.key for p in batch if p.key is not None})
    if not keys:
        return {}
    found = sql.find_nonces(cursor, keys)
    rooms = {p.room_id: p.room for p in batch}
    return {
        # As it is now, edited or deleted; its reactions and mentions are not read here
        # (an acknowledgement of a retry, to its sender only).
        (room_id, user_id, nonce): StoredMessage(
            seq,
            rooms[room_id],
            username,
            body,
            sql.ts_out(ts),
            nonce,
            None if edited_at is None else sql.ts_out(edited_at),
            bool(deleted),
        )
        for room_id, user_id, nonce, seq, body, ts, username, edited_at, deleted in found
    }
