"""The message writer on a real database: grouped commits, seqs, nonces, timestamps."""

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chat import messages
from chat.batch import SQLITE_FIND_NONCES
from chat.db import (
    AsyncTransactions,
    Transactions,
    Work,
    create_engine,
    migrate,
    session_factory,
    write_transactions,
)
from chat.errors import StorageUnavailable
from chat.messages import StoredMessage
from chat.models import Room, User
from chat.settings import Settings
from chat.writer import MessageWriter
from tests.conftest import drop_postgres_database, make_settings, new_postgres_database

ROOMS = ("alpha", "beta", "gamma")
T = TypeVar("T")


@contextlib.contextmanager
def migrated(tmp_path: Path, **overrides: Any) -> Iterator[Settings]:
    """Settings of a fresh, migrated database (PostgreSQL's dropped afterwards)."""
    settings = make_settings(tmp_path, **overrides)
    try:
        migrate(settings)
        yield settings
    finally:
        if settings.database_url.startswith("postgresql"):
            drop_postgres_database(settings.database_url)


async def seed(engine: AsyncEngine, users: list[str], rooms: list[str]) -> list[Any]:
    """New users and rooms, in that order."""
    rows: list[Any] = [User(username=n, username_key=n, password_hash="-") for n in users]
    rows += [Room(name=name) for name in rooms]
    async with session_factory(engine)() as session:
        session.add_all(rows)
        await session.commit()
    return rows


@contextlib.asynccontextmanager
async def writing(
    settings: Settings,
) -> AsyncIterator[tuple[AsyncEngine, MessageWriter, list[StoredMessage]]]:
    """A running writer on the database; what it announces collects in the list."""
    engine = create_engine(settings)
    announced: list[StoredMessage] = []

    async def on_stored(stored: list[StoredMessage]) -> None:
        announced.extend(stored)

    transactions = write_transactions(settings, engine)
    writer = MessageWriter(transactions, on_stored)
    writer.start()
    try:
        yield engine, writer, announced
    finally:
        await writer.stop()
        await transactions.close()
        await engine.dispose()


async def _write_and_read_back(settings: Settings) -> None:
    async with writing(settings) as (engine, writer, announced):
        ann, bob, *rooms = await seed(engine, ["ann", "bob"], list(ROOMS))
        users = [ann, bob]
        # Submitted together, so they share commits; the last one repeats a nonce
        # of the same batch, and must come back as that message, not a new one.
        submitted = []
        for i in range(300):
            room, user = rooms[i % 3], users[i % 2]
            submitted.append(
                writer.submit(room.name, room.id, user.id, user.username, f"m{i}", f"n{i}")
            )
        submitted.append(writer.submit("alpha", rooms[0].id, users[0].id, "ann", "again", "n0"))
        results = await asyncio.gather(*submitted)

        for index, room in enumerate(rooms):
            ids = [message.id for message, _ in results[index:300:3]]
            assert ids == list(range(1, 101)), f"{room.name}: ids in submission order, no gaps"
        assert all(is_new for _, is_new in results[:300])
        repeat, is_new = results[300]
        assert not is_new and repeat == results[0][0]
        await writer.announced()
        assert sorted((m.room, m.id) for m in announced) == sorted(
            (m.room, m.id) for m, _ in results[:300]
        ), "each new message announced once; the repeat not at all"

        # A retry in a later commit: the stored message, timestamp and all.
        retry, is_new = await writer.store("beta", rooms[1].id, users[1].id, "bob", "x", "n1")
        assert not is_new and retry == results[1][0]

        # One commit of many rooms, new messages and repeated nonces from several
        # earlier commits together: every room numbered, every retry found.
        more = await seed(engine, [], [f"room{i}" for i in range(19)])
        together = [writer.submit(r.name, r.id, ann.id, "ann", "hi", "n") for r in more]
        together += [
            writer.submit(rooms[i % 3].name, rooms[i % 3].id, users[i % 2].id, "-", "-", f"n{i}")
            for i in range(21)
        ]
        again = await asyncio.gather(*together)
        assert [(m.room, m.id, is_new) for m, is_new in again[:19]] == [
            (r.name, 1, True) for r in more
        ]
        assert again[19:] == [(m, False) for m, _ in results[:21]]

        # What the writer stored reads back the same through the ORM.
        async with session_factory(engine)() as session:
            for index, room in enumerate(rooms):
                stored = await messages.history(
                    session, room.id, room.name, limit=messages.HISTORY_MAX_LIMIT
                )
                assert stored == [message for message, _ in results[index:300:3]]
                assert await messages.latest_seq(session, room.id) == 100


def test_writer_numbers_each_room_in_order_and_stores_each_nonce_once(tmp_path: Path) -> None:
    with migrated(tmp_path) as settings:
        asyncio.run(_write_and_read_back(settings))


# Text that a batch's encoding must carry unchanged: quotes, backslashes, escapes spelt out,
# control characters, line separators, astral characters, right-to-left text and 4,000
# characters; a nonce of the same kinds.
AWKWARD_BODIES = [
    'say "hi" \\ and \\u0041 and \\n, literally',
    "tab\tnew\nline\r\x01\x1f\x7f end",
    "\u2028\u2029 separators, \ufeff BOM, \u200d joiner",
    "astral \U0001f600\U0001f469\u200d\U0001f4bb\U0001f3f3\ufe0f\u200d\U0001f308"
    " and \U0001d518\U0001d52b\U0001d526",
    "עברית עם English, العربية",
    '[1, 2] {"json": null} \'); DROP TABLE messages; --',
    "x" * 4000,
    "9223372036854775807",
    "null",
]


async def _awkward(settings: Settings) -> None:
    async with writing(settings) as (engine, writer, _announced):
        user, room = await seed(engine, ["ann"], ["r"])
        results = await asyncio.gather(
            *(
                writer.submit("r", room.id, user.id, "ann", body, f'n"\\{i}😀')
                for i, body in enumerate(AWKWARD_BODIES)
            ),
            writer.submit("r", room.id, user.id, "ann", "no nonce", None),
        )
        assert [m.body for m, _ in results] == [*AWKWARD_BODIES, "no nonce"]
        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT seq, body, nonce FROM messages ORDER BY seq"))
            ).all()
        assert [tuple(row) for row in rows] == [
            *((i + 1, body, f'n"\\{i}😀') for i, body in enumerate(AWKWARD_BODIES)),
            (len(AWKWARD_BODIES) + 1, "no nonce", None),
        ]
        # Each nonce is found again as it was stored: a retry gets the stored message.
        again, is_new = await writer.store("r", room.id, user.id, "ann", "retry", 'n"\\3😀')
        assert not is_new and (again.id, again.body) == (4, AWKWARD_BODIES[3])


def test_any_text_is_stored_exactly_as_sent(tmp_path: Path) -> None:
    with migrated(tmp_path) as settings:
        asyncio.run(_awkward(settings))


def test_nonce_lookup_uses_the_unique_index_on_sqlite(tmp_path: Path) -> None:
    # A scan here costs each commit time in proportion to all messages ever stored.
    migrate(Settings(data_dir=tmp_path, database_url=""))
    keys = json.dumps([[1, 1, "a"], [2, 1, "b"], [3, 2, "c"]])
    with sqlite3.connect(tmp_path / "chat.db") as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN " + SQLITE_FIND_NONCES, [keys]).fetchall()
    details = [row[-1] for row in plan]
    assert any("USING INDEX uq_messages_room_user_nonce" in d for d in details), details
    assert not any(d.startswith("SCAN m") for d in details), details


def test_changed_messages_are_found_through_the_index_of_changed_messages_alone(
    tmp_path: Path,
) -> None:
    # Only changed messages are in it, so that storing a message costs no entry there; a
    # resume's `change_seq > since` must still be answered from it, not by a scan.
    migrate(Settings(data_dir=tmp_path, database_url=""))
    with sqlite3.connect(tmp_path / "chat.db") as conn:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'ix_messages_room_change'"
        ).fetchone()
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM messages"
            " WHERE room_id = ? AND seq <= ? AND change_seq > ?",
            [1, 5, 5],
        ).fetchall()
    assert sql.endswith("WHERE change_seq IS NOT NULL"), sql
    details = [row[-1] for row in plan]
    assert any("USING INDEX ix_messages_room_change" in d for d in details), details


async def _outage(settings: Settings) -> None:
    async with writing(settings) as (engine, writer, _announced):
        user, room = await seed(engine, ["ann"], ["r"])

        async def rename(old: str, new: str) -> None:
            async with engine.begin() as conn:
                await conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))

        await rename("messages", "messages_away")
        with pytest.raises(StorageUnavailable):
            await writer.store("r", room.id, user.id, "ann", "lost", "n1")
        await rename("messages_away", "messages")
        # The writer lives on, and the failed batch took no number.
        stored, is_new = await writer.store("r", room.id, user.id, "ann", "kept", "n1")
        assert is_new and stored.id == 1 and stored.body == "kept"


def test_writer_reports_a_storage_outage_and_lives_on(tmp_path: Path) -> None:
    with migrated(tmp_path) as settings:
        asyncio.run(_outage(settings))


class HeldOpen(AsyncTransactions):
    """Real transactions, each held open after its work until `release` is set."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.worked = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, work: Work[T]) -> T:
        async with self._engine.begin() as conn:
            result = await conn.run_sync(lambda sync: work(sync.connection.cursor()))
            self.worked.set()
            await self.release.wait()
            return result


class Recorded:
    """Real transactions, each one's outcome noted: committed, or refused by a unique index."""

    def __init__(self, transactions: Transactions) -> None:
        self.dialect = transactions.dialect
        self.integrity_error = transactions.integrity_error
        self.outcomes: list[str] = []
        self._transactions = transactions

    async def run(self, work: Work[T]) -> T:
        try:
            result = await self._transactions.run(work)
        except self.integrity_error:
            self.outcomes.append("refused")
            raise
        self.outcomes.append("committed")
        return result

    async def close(self) -> None:
        await self._transactions.close()


async def wait_for_lock_wait(engine: AsyncEngine, timeout_secs: float = 30) -> None:
    """Until some session of this database waits for another transaction's row lock.

    PostgreSQL gives no notice of a lock wait that could be awaited, so its activity
    view is polled, each time in a transaction of its own: within one transaction the view
    lists the sessions there were at its first read, and a writer whose connection opened
    after that was never seen (on a loaded machine, where the writer comes late, the wait
    ran out).
    """
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND wait_event = 'transactionid'"
    )
    async with asyncio.timeout(timeout_secs), engine.connect() as conn:
        while not await conn.scalar(query):
            await conn.rollback()
            await asyncio.sleep(0.01)


async def _race_on_one_nonce(settings: Settings) -> None:
    engine = create_engine(settings)
    user, room = await seed(engine, ["ann"], ["r"])
    announced: list[StoredMessage] = []

    async def on_stored(stored: list[StoredMessage]) -> None:
        announced.extend(stored)

    first_transactions = HeldOpen(engine)
    second_transactions = Recorded(write_transactions(settings, engine))
    first = MessageWriter(first_transactions, on_stored)
    second = MessageWriter(second_transactions, on_stored)
    first.start()
    second.start()
    try:
        # Two processes' writers take the same retried message: the first has stored
        # it but not committed when the second looks for the nonce and finds nothing.
        mine = first.submit("r", room.id, user.id, "ann", "hello", "n1")
        await first_transactions.worked.wait()
        theirs = second.submit("r", room.id, user.id, "ann", "hello", "n1")
        other = second.submit("r", room.id, user.id, "ann", "next", "n2")
        # The second writer has looked for the nonce and now waits on the room's lock.
        await wait_for_lock_wait(engine)
        first_transactions.release.set()
        (stored, is_new), (again, again_new), (following, following_new) = await asyncio.wait_for(
            asyncio.gather(mine, theirs, other), 10
        )
        assert second_transactions.outcomes == ["refused", "committed", "committed"], (
            "the second writer's batch is refused, then each message gets a transaction"
        )
        assert is_new and stored.id == 1
        assert not again_new and again == stored, "the second writer answers with the first's"
        assert following_new and following.id == 2, "the rest of its batch is stored, no gap"
        await first.announced()
        await second.announced()
        assert [m.id for m in announced] == [1, 2]
    finally:
        first_transactions.release.set()
        await first.stop()
        await second.stop()
        await engine.dispose()


def test_writers_racing_on_one_nonce_store_it_once(tmp_path: Path) -> None:
    # Only PostgreSQL lets two writers' transactions overlap; SQLite's BEGIN IMMEDIATE
    # runs them one after the other, so the second always sees the first's row.
    with migrated(tmp_path, database_url=new_postgres_database()) as settings:
        asyncio.run(_race_on_one_nonce(settings))
