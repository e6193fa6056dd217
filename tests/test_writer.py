"""The message writer on a real database: grouped commits, seqs, nonces, timestamps."""

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy.dialects import sqlite

from chat import messages
from chat.db import create_engine, migrate, session_factory, write_transactions
from chat.messages import MessageWriter, StoredMessage, _BatchSql
from chat.models import Room, User
from chat.settings import Settings
from tests.conftest import drop_postgres_database, make_settings

ROOMS = ("alpha", "beta", "gamma")


async def _write_and_read_back(settings: Settings) -> None:
    engine = create_engine(settings)
    sessions = session_factory(engine)
    async with sessions() as session:
        users = [User(username=n, username_key=n, password_hash="-") for n in ("ann", "bob")]
        rooms = [Room(name=name) for name in ROOMS]
        session.add_all([*users, *rooms])
        await session.commit()
    announced: list[StoredMessage] = []

    async def on_stored(stored: list[StoredMessage]) -> None:
        announced.extend(stored)

    transactions = write_transactions(settings, engine)
    writer = MessageWriter(transactions, on_stored)
    writer.start()
    try:
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
        assert sorted((m.room, m.id) for m in announced) == sorted(
            (m.room, m.id) for m, _ in results[:300]
        ), "each new message announced once; the repeat not at all"

        # A retry in a later commit: the stored message, timestamp and all.
        retry, is_new = await writer.store("beta", rooms[1].id, users[1].id, "bob", "x", "n1")
        assert not is_new and retry == results[1][0]

        # What the writer stored reads back the same through the ORM.
        async with sessions() as session:
            for index, room in enumerate(rooms):
                stored = await messages.history(
                    session, room.id, room.name, limit=messages.HISTORY_MAX_LIMIT
                )
                assert stored == [message for message, _ in results[index:300:3]]
                assert await messages.latest_seq(session, room.id) == 100
    finally:
        await writer.stop()
        await transactions.close()
        await engine.dispose()


def test_writer_numbers_each_room_in_order_and_stores_each_nonce_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    try:
        migrate(settings)
        asyncio.run(_write_and_read_back(settings))
    finally:
        if settings.database_url.startswith("postgresql"):
            drop_postgres_database(settings.database_url)


def test_nonce_lookup_uses_the_unique_index_on_sqlite(tmp_path: Path) -> None:
    # A scan here costs each commit time in proportion to all messages ever stored.
    migrate(Settings(data_dir=tmp_path, database_url=""))
    sql = _BatchSql(sqlite.dialect())
    with sqlite3.connect(tmp_path / "chat.db") as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN " + sql.stored_with_nonce(3), [1, 1, "a", 2, 1, "b", 3, 2, "c"]
        ).fetchall()
    details = [row[-1] for row in plan]
    assert any("USING INDEX uq_messages_room_user_nonce" in d for d in details), details
    assert not any(d.startswith("SCAN m") for d in details), details
