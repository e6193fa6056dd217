"""Searching messages (SPEC "Search (v2)"): the one place that reads a query, turns it into
SQLite FTS5 or PostgreSQL full-text syntax, and runs it over the rooms the caller may read.

A query is words and `"quoted phrases"`; every one must match, and the last word matches
as a prefix too ("deplo" finds "deploy"). A user's text never reaches the database's query
syntax as syntax: each word or phrase is cut into its letter-and-digit runs here, and only
those runs are put into the query (FTS5: inside double quotes; PostgreSQL: single-quoted
lexemes), so `NEAR`, `*`, `:`, `^`, `-`, `!`, `&`, `|`, quotes and parentheses are text (or
nothing) to the database. "don't" is the phrase "don t", as the index cut the message.

The indexes (migrations 0012_search, 0013_search_index, and on PostgreSQL
0015_search_phrase's b-tree in the results' order):
- SQLite: the FTS5 table `messages_fts` (tokenizer `unicode61 remove_diacritics 2`: any
  script, case and accents folded) over the view `messages_search`, whose rowid is the
  message's key `room_id << 40 | seq` (a message's id is per room). Not the messages'
  own rowid: with no INTEGER PRIMARY KEY, VACUUM may renumber it and the index would then
  name other messages. New messages are indexed after their commit, in batches
  (`chat.search_index`), and the search route has the backlog indexed before it reads;
  triggers on messages update of `body`/`deleted` and delete keep indexed messages
  current in the same transaction, whoever writes; a deleted message (`deleted` true) is
  not in it.
- PostgreSQL: the generated column `body_tsv`, `to_tsvector('simple', body)` (no stemming
  and no stop words: works alike for every language) stored with the row, and a GIN index
  on it, used by `body_tsv() @@ query`; deleted messages are filtered out by the query.
  Stored, not an expression index: checking a message (a phrase's positions, a room's
  newest one by one) then reads its words instead of tokenizing its body again.

Reading them (`search`): with few matches, every match is sorted by time; with many more
matches than rooms the caller may read (a common word), each room's newest are read
instead (ids follow time within a room) and those pages merged: SQLite reads the room's
key range of the index backwards, PostgreSQL the room's primary key backwards checking
each message, both stopping after a page. PostgreSQL first checks the newest messages in time order
(`_postgres_recent`, the index of migration 0015_search_phrase) and returns a full page
found there; only a query too rare for that goes to the GIN index.
"""

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Select,
    TableClause,
    and_,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
    text,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import Join

from chat import access
from chat.messages import StoredMessage
from chat.models import Message, Room, User

QUERY_MAX_CHARS = 256
QUERY_MAX_TERMS = 16
SEARCH_DEFAULT_LIMIT = 20
SEARCH_MAX_LIMIT = 100
# A message's key in the SQLite index: room id in the high bits, its per-room id below.
KEY_SHIFT = 40
KEY_MASK = (1 << KEY_SHIFT) - 1
# SQLite: above this many matches per readable room, each room's newest are read instead.
MATCHES_PER_ROOM = 100
FTS_TABLE = "messages_fts"
# Its words (an fts5vocab table).
FTS_VOCAB = "messages_fts_vocab"
# The prefix length the FTS5 table has lists of its own for (`prefix='3'`).
INDEXED_PREFIX = 3
# A last word completing more words than this is read as a prefix by FTS5 itself.
PREFIX_MAX_WORDS = 64
FTS_SOURCE_VIEW = "messages_search"
# PostgreSQL: how many of the newest messages the first step checks (`_postgres_recent`);
# with at least RECENT_AGAIN matches there but not a page, a larger window (at most
# RECENT_MAX) is checked before the GIN index is asked.
RECENT_WINDOW = 2000
RECENT_AGAIN = 3
RECENT_MAX = 30_000
PG_CONFIG = "simple"

# What both indexes cut text into: runs of letters and digits (`_` is punctuation to FTS5's
# unicode61, so it is here too).
_TOKEN = re.compile(r"[^\W_]+")
# A quoted phrase, or a bare word; a quote left unclosed is caught separately.
_TERM = re.compile(r'"([^"]*)"|([^\s"]+)')


class BadQuery(ValueError):
    """The query cannot be searched for (empty, too long, too many terms, unclosed quote);
    the message says why, for a 422."""


@dataclass(frozen=True, slots=True)
class Term:
    # The term's letter-and-digit runs, in order: one for a plain word.
    tokens: tuple[str, ...]
    phrase: bool


@dataclass(frozen=True, slots=True)
class Query:
    terms: tuple[Term, ...]

    @property
    def prefix_last(self) -> bool:
        """The last term is a bare word: it matches as a prefix."""
        return not self.terms[-1].phrase

    @property
    def expandable(self) -> str | None:
        """The prefix the last word asks for, if it is one ASCII word: then the words of
        the index it stands for can be listed (the index keeps other scripts folded)."""
        last = self.terms[-1].tokens
        if self.prefix_last and len(last) == 1 and last[0].isascii():
            return last[0]
        return None

    def fts5(self, completions: list[str] | None = None) -> str:
        """The FTS5 MATCH expression: each term a quoted phrase (quotes inside are
        impossible: tokens are letters and digits), ANDed; `*` after the last word, or
        `completions`, the words of the index that complete it, ORed."""
        parts = ['"' + " ".join(term.tokens) + '"' for term in self.terms]
        if completions is not None:
            parts[-1] = "(" + " OR ".join(f'"{word}"' for word in completions) + ")"
        elif self.prefix_last:
            parts[-1] += "*"
        return " AND ".join(parts)

    def tsquery(self) -> str:
        """The `to_tsquery` text: single-quoted lexemes, `<->` within a phrase or a word cut
        in several, `&` between terms, `:*` on the last lexeme of the last word."""
        parts = []
        for i, term in enumerate(self.terms):
            lexemes = [f"'{token}'" for token in term.tokens]
            if i == len(self.terms) - 1 and self.prefix_last:
                lexemes[-1] += ":*"
            parts.append("(" + " <-> ".join(lexemes) + ")")
        return " & ".join(parts)


def parse(q: str) -> Query:
    """Read the `q` parameter; BadQuery if it cannot be searched for."""
    if len(q) > QUERY_MAX_CHARS:
        raise BadQuery(f"the query is longer than {QUERY_MAX_CHARS} characters")
    if q.count('"') % 2:
        raise BadQuery("a quoted phrase is not closed")
    terms: list[Term] = []
    for match in _TERM.finditer(q):
        phrase, word = match.group(1), match.group(2)
        tokens = tuple(t.lower() for t in _TOKEN.findall(phrase if phrase is not None else word))
        # A word of punctuation only ("*", "-") is nothing the index holds: it asks nothing.
        if tokens:
            terms.append(Term(tokens, phrase is not None))
    if not terms:
        raise BadQuery("the query has no words to search for")
    if len(terms) > QUERY_MAX_TERMS:
        raise BadQuery(f"the query has more than {QUERY_MAX_TERMS} words and phrases")
    return Query(tuple(terms))


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page across rooms ended: the last message's time, room id and id. Sent to
    clients opaque (the `cursor` of the `Link: rel="next"` URL); only its order matters."""

    ts: datetime
    room_id: int
    seq: int

    def encode(self) -> str:
        raw = f"{self.ts.isoformat()}|{self.room_id}|{self.seq}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            ts, room_id, seq = raw.split("|")
            cursor = cls(datetime.fromisoformat(ts), int(room_id), int(seq))
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise BadQuery("the cursor is not one this server gave") from exc
        if cursor.ts.tzinfo is None or not (
            0 < cursor.room_id < 2**31 and 0 < cursor.seq <= KEY_MASK
        ):
            raise BadQuery("the cursor is not one this server gave")
        return cursor


@dataclass(frozen=True, slots=True)
class Found:
    message: StoredMessage
    room_id: int

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.message.ts, self.room_id, self.message.id)


def body_tsv() -> ColumnElement[object]:
    """PostgreSQL's stored words of a message (`messages.body_tsv`, not in the models: the
    column exists on PostgreSQL only), which its GIN index is built on."""
    return literal_column(f"{Message.__tablename__}.{PG_COLUMN}")


_Stmt = Select[int, int, str, str, str, datetime, str | None]


def _filters(
    m: type[Message], author_id: int | None, before: int | None, cursor: Cursor | None
) -> list[ColumnElement[bool]]:
    """The conditions besides the query and the rooms, on messages `m`."""
    where = []
    if author_id is not None:
        where.append(m.user_id == author_id)
    if before is not None:
        where.append(m.seq < before)
    if cursor is not None:
        where.append(
            tuple_(m.ts, m.room_id, m.seq)
            < tuple_(
                bindparam("cursor_ts", cursor.ts, type_=Message.ts.type),
                cursor.room_id,
                cursor.seq,
            )
        )
    return where


class _RoomsFirst(Join):
    """`rooms JOIN messages`, which SQLite must read rooms first: each room's newest
    matches come from a subquery on the room (`CROSS JOIN` is SQLite's way to fix the
    order; without it, with no statistics, it may scan every message instead)."""

    inherit_cache = True


@compiles(_RoomsFirst, "sqlite")
def _rooms_first_sqlite(join: _RoomsFirst, compiler: SQLCompiler, **kw: Any) -> str:
    kw["asfrom"] = True
    left = compiler.process(join.left, **kw)
    right = compiler.process(join.right, **kw)
    assert join.onclause is not None
    return f"{left} CROSS JOIN {right} ON {compiler.process(join.onclause, **kw)}"


def _fts() -> TableClause:
    return table(FTS_TABLE, column("rowid", BigInteger))


def _fts_match(expression: str) -> ColumnElement[bool]:
    return text(f"{FTS_TABLE} MATCH :fts").bindparams(fts=expression)  # type: ignore[return-value]


async def _fts_expression(session: AsyncSession, query: Query) -> str | None:
    """The MATCH expression for `query`; None if its last word completes no word of the
    index (nothing can match). FTS5 reads a prefix by merging the lists of every word it
    completes, whole, on every evaluation, and per room that is once per room: so a
    prefix that completes few words is asked as those words (each list then read only
    from the room's range), one that completes many as a prefix. A 3-letter prefix has its
    own list in the index (`prefix='3'`)."""
    prefix = query.expandable
    if prefix is None or len(prefix) == INDEXED_PREFIX:
        # The index keeps a list for every 3-letter prefix: read like a word's.
        return query.fts5()
    words = list(
        await session.scalars(
            text(
                f"SELECT term FROM {FTS_VOCAB} WHERE term >= :low AND term < :high "
                "ORDER BY term LIMIT :most"
            ).bindparams(low=prefix, high=prefix + "\x7f", most=PREFIX_MAX_WORDS + 1)
        )
    )
    if not words:
        return None
    return query.fts5(words if len(words) <= PREFIX_MAX_WORDS else None)


async def _per_room(
    session: AsyncSession, expression: str, readable: ColumnElement[bool], room_id: int | None
) -> bool:
    """SQLite: whether to take each room's newest matches from the index (its keys are in
    (room, id) order: a range per room, read backwards, stops after `limit`), rather than
    every match at once, sorted by time. Every match costs a lookup and a place in the
    sort; every room costs an index query: so per room when there are many more matches
    than rooms (counted only up to that point), or one room only."""
    if room_id is not None:
        return True
    rooms = await session.scalar(select(func.count()).select_from(Room).where(readable)) or 0
    enough = max(rooms, 1) * MATCHES_PER_ROOM
    fts = _fts()
    hits = select(fts.c.rowid).where(_fts_match(expression)).limit(enough)
    matches = await session.scalar(select(func.count()).select_from(hits.subquery())) or 0
    return matches >= enough


async def search(
    session: AsyncSession,
    *,
    user_id: int,
    is_admin: bool,
    query: Query,
    room_id: int | None = None,
    author: str | None = None,
    before: int | None = None,
    cursor: Cursor | None = None,
    limit: int = SEARCH_DEFAULT_LIMIT,
) -> list[Found]:
    """Up to `limit` messages matching `query`, newest first (time, then room, then id),
    in the rooms the user may read (`access.readable`, the only filter of rooms here):
    of one room if `room_id` (then `before` = ids below it), by one author if `author`
    (an unknown name: nothing), after `cursor` in that order if given."""
    dialect = session.get_bind().dialect.name
    author_id = None
    if author is not None:
        author_id = await session.scalar(select(User.id).where(User.username_key == author.lower()))
        if author_id is None:
            return []
    readable = access.readable(user_id, is_admin)
    if room_id is not None:
        readable = and_(readable, Room.id == room_id)
    rooms_first = _RoomsFirst(Room.__table__, Message.__table__, Message.room_id == Room.id)
    stmt: _Stmt = (
        select(
            Message.room_id,
            Message.seq,
            Room.name,
            User.username,
            Message.body,
            Message.ts,
            Message.nonce,
        )
        .select_from(rooms_first)
        .join(User, User.id == Message.user_id)
        .where(readable, *_filters(Message, author_id, before, cursor))
    )
    if dialect == "postgresql":
        # A plan for these very words: the driver prepares statements, and after five runs
        # PostgreSQL may keep one generic plan, blind to how common the words are (a
        # common word's rooms then each read the GIN index whole: seconds, not ms).
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        tsquery = func.to_tsquery(literal_column(f"'{PG_CONFIG}'"), query.tsquery())
        matching = and_(body_tsv().op("@@")(tsquery), Message.deleted.is_(False))
        # A short prefix stands for many words: the per-room plan would read the GIN index
        # for all of them once per room; sorting its matches is cheaper.
        # In one room the per-room plan below is already a bounded read of its newest
        # (or the GIN index and the room's few matches): no window first.
        window = RECENT_WINDOW if room_id is None else 0
        while window > 0:
            recent = await _postgres_recent(
                session, tsquery, readable, room_id, author_id, before, cursor, limit, window
            )
            if len(recent) >= limit:
                return recent
            # As many matches to come in the next messages as in these: a query this
            # common is checked in a larger window, once; a rarer one asks the GIN index.
            if len(recent) < RECENT_AGAIN or window >= RECENT_MAX:
                break
            window = min(RECENT_MAX, -(-2 * limit * window // len(recent)))
        short_prefix = query.prefix_last and len(query.terms[-1].tokens[-1]) <= INDEXED_PREFIX
        # Few matches among the newest messages, most of which the user may read: few
        # matches anywhere, which the GIN index lists cheaper than rooms are read, and
        # without counting them first (a phrase's count checks each of its words' messages).
        rare = RECENT_WINDOW > 0 and room_id is None and await _mostly_readable(session, readable)
        counted = and_(matching, *_filters(Message, author_id, before, cursor))
        if (
            not rare
            and (room_id is not None or not short_prefix)
            and await _postgres_per_room(session, counted, readable, room_id)
        ):
            return await _postgres_newest_per_room(
                session, matching, readable, author_id, before, cursor, limit
            )
        stmt = stmt.where(matching)
        stmt = stmt.order_by(Message.ts.desc(), Message.room_id.desc(), Message.seq.desc())
        return _found((await session.execute(stmt.limit(limit))).all())
    expression = await _fts_expression(session, query)
    if expression is None:
        return []
    if await _per_room(session, expression, readable, room_id):
        fts = _fts()
        key = fts.c.rowid.op("&")(KEY_MASK)
        low = Room.id.op("<<")(KEY_SHIFT)
        newest = select(key).where(_fts_match(expression), fts.c.rowid.between(low, low + KEY_MASK))
        if author_id is not None or cursor is not None:
            # What the page leaves out is skipped inside the room's range, not after it.
            m = aliased(Message)
            newest = newest.join(m, and_(m.room_id == Room.id, m.seq == key)).where(
                *_filters(m, author_id, None, cursor)
            )
        if before is not None:
            newest = newest.where(fts.c.rowid < low + min(before, KEY_MASK + 1))
        newest = newest.order_by(fts.c.rowid.desc()).limit(limit).correlate(Room)
        stmt = stmt.where(Message.seq.in_(newest))
    else:
        fts = _fts()
        stmt = stmt.join(
            fts,
            and_(
                Message.room_id == fts.c.rowid.op(">>")(KEY_SHIFT),
                Message.seq == fts.c.rowid.op("&")(KEY_MASK),
            ),
        ).where(_fts_match(expression))
    stmt = stmt.order_by(Message.ts.desc(), Message.room_id.desc(), Message.seq.desc())
    return _found((await session.execute(stmt.limit(limit))).all())


async def _postgres_recent(
    session: AsyncSession,
    tsquery: ColumnElement[object],
    readable: ColumnElement[bool],
    room_id: int | None,
    author_id: int | None,
    before: int | None,
    cursor: Cursor | None,
    limit: int,
    window: int,
) -> list[Found]:
    """PostgreSQL, the first step: the matches among the newest `window` messages (after
    the cursor; of the room if one is asked), each checked against its stored words, up
    to `limit`. Every message outside them comes later in the page's order, so a full
    page from them is the page. A common word, a phrase of common words or a short prefix
    matches often enough to be answered from some thousands of messages read in time
    order along an index (their rows lie in that order too), where the GIN index would
    list, fetch from all over the table (and for a phrase, check) each of their many
    matches; a rarer query falls through to it after this bounded read."""
    # Not an alias: the stored words are named by the table's name.
    m = Message
    newest: Select[int, int, int, str, datetime, str | None, bool, Any] = select(
        m.room_id,
        m.seq,
        m.user_id,
        m.body,
        m.ts,
        m.nonce,
        m.deleted,
        literal_column(f"{m.__tablename__}.{PG_COLUMN}").label(PG_COLUMN),
    ).where(*_filters(m, None, before, cursor))
    if room_id is not None:
        # A room's messages in id order, which is their time order: its primary key.
        newest = newest.where(m.room_id == room_id).order_by(m.seq.desc())
    else:
        # The index on (ts, room_id, seq), read backwards.
        newest = newest.order_by(m.ts.desc(), m.room_id.desc(), m.seq.desc())
    recent = newest.limit(window).subquery("recent")
    where = [recent.c[PG_COLUMN].op("@@")(tsquery), recent.c.deleted.is_(False), readable]
    if author_id is not None:
        where.append(recent.c.user_id == author_id)
    stmt = (
        select(
            recent.c.room_id,
            recent.c.seq,
            Room.name,
            User.username,
            recent.c.body,
            recent.c.ts,
            recent.c.nonce,
        )
        .select_from(recent)
        .join(Room, Room.id == recent.c.room_id)
        .join(User, User.id == recent.c.user_id)
        .where(*where)
        .order_by(recent.c.ts.desc(), recent.c.room_id.desc(), recent.c.seq.desc())
        .limit(limit)
    )
    return _found((await session.execute(stmt)).all())


async def _mostly_readable(session: AsyncSession, readable: ColumnElement[bool]) -> bool:
    """PostgreSQL: whether the user may read at least a quarter of the newest
    `RECENT_WINDOW` messages (read from the time-order index only)."""
    newest = (
        select(Message.room_id)
        .order_by(Message.ts.desc(), Message.room_id.desc(), Message.seq.desc())
        .limit(RECENT_WINDOW)
        .subquery()
    )
    seen = select(func.count()).select_from(newest.join(Room, Room.id == newest.c.room_id))
    return (await session.scalar(seen.where(readable)) or 0) * 4 >= RECENT_WINDOW


async def _postgres_per_room(
    session: AsyncSession,
    matching: ColumnElement[bool],
    readable: ColumnElement[bool],
    room_id: int | None,
) -> bool:
    """PostgreSQL: as `_per_room`. The GIN index finds every match but in no order; with
    many, each room's newest are read backwards along the primary key instead, the query
    checked on each message until enough match. `matching` holds the page's other
    conditions too (an author's few matches of a common word are not many)."""
    if room_id is not None:
        return True
    rooms = await session.scalar(select(func.count()).select_from(Room).where(readable)) or 0
    enough = max(rooms, 1) * MATCHES_PER_ROOM
    hits = select(Message.seq).where(matching).limit(enough)
    matches = await session.scalar(select(func.count()).select_from(hits.subquery())) or 0
    return matches >= enough


async def _postgres_newest_per_room(
    session: AsyncSession,
    matching: ColumnElement[bool],
    readable: ColumnElement[bool],
    author_id: int | None,
    before: int | None,
    cursor: Cursor | None,
    limit: int,
) -> list[Found]:
    newest = (
        select(
            Message.room_id, Message.seq, Message.user_id, Message.body, Message.ts, Message.nonce
        )
        .where(Message.room_id == Room.id, matching, *_filters(Message, author_id, before, cursor))
        .order_by(Message.seq.desc())
        .limit(limit)
        .lateral("newest")
    )
    stmt = (
        select(
            newest.c.room_id,
            newest.c.seq,
            Room.name,
            User.username,
            newest.c.body,
            newest.c.ts,
            newest.c.nonce,
        )
        .select_from(Room)
        .join(newest, true())
        .join(User, User.id == newest.c.user_id)
        .where(readable)
        .order_by(newest.c.ts.desc(), newest.c.room_id.desc(), newest.c.seq.desc())
        .limit(limit)
    )
    return _found((await session.execute(stmt)).all())


def _found(rows: Sequence[Row[int, int, str, str, str, datetime, str | None]]) -> list[Found]:
    return [
        Found(StoredMessage(seq, room, username, body, ts, nonce), room_id)
        for room_id, seq, room, username, body, ts, nonce in rows
    ]


PG_COLUMN = "body_tsv"
PG_INDEX = "ix_messages_body_tsv"
# The messages in time order (migration 0015_search_phrase), for `_postgres_recent`.
PG_RECENT_INDEX = "ix_messages_ts_room_seq"


def in_models(name: str | None, type_: str, parent_names: object = None) -> bool:
    """False for the search indexes, which are in the database but not in the models:
    SQLite's FTS5 table, its shadow tables (`_data`, `_idx`, `_docsize`, `_config`) and
    its marks (`_indexed`), which SQLAlchemy cannot describe or which exist on one dialect
    only, and PostgreSQL's stored words column and their index (the same). For the schema
    comparison's `include_name`."""
    if name is None:
        return True
    if type_ == "table":
        return not (name == FTS_TABLE or name.startswith(FTS_TABLE + "_"))
    if type_ == "column":
        return name != PG_COLUMN
    return not (type_ == "index" and name in (PG_INDEX, PG_RECENT_INDEX))
