"""Migration 0009 (conversations) carries a running server's data forward.

SPEC "Conversations (v2)" gives rooms kinds, topics, members and roles; the rooms that
existed before stay as they were: open to everyone (`public`, no topic), everyone who posted
in a room a member of it, each room's creator its owner, and the first admin owner of
`general`. On SQLite and on PostgreSQL.
"""

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from chat import search
from chat.db import alembic_config, migrate
from chat.models import Base, UTCDateTime
from chat.settings import Settings
from tests.conftest import drop_postgres_database, new_postgres_database

BEFORE = "0008_drop_revoked"
DATABASES = ["sqlite", "postgresql"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# The tables as they were at BEFORE: what a server of that version wrote.
metadata = sa.MetaData()
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(32)),
    sa.Column("username_key", sa.String(32)),
    sa.Column("username_skeleton", sa.String(64)),
    sa.Column("password_hash", sa.String(255)),
    sa.Column("is_admin", sa.Boolean),
    sa.Column("is_active", sa.Boolean),
    sa.Column("token_key", sa.String(32)),
    sa.Column("created_at", UTCDateTime),
)
rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64)),
    sa.Column("last_seq", sa.BigInteger),
    sa.Column("created_by", sa.Integer),
    sa.Column("created_at", UTCDateTime),
)
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("room_id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("user_id", sa.Integer),
    sa.Column("body", sa.Text),
    sa.Column("nonce", sa.String(64)),
    sa.Column("ts", UTCDateTime),
)
joined = sa.Table(
    "memberships",
    sa.MetaData(),
    sa.Column("room_id", sa.Integer),
    sa.Column("user_id", sa.Integer),
    sa.Column("joined_at", UTCDateTime),
)


@pytest.fixture(params=DATABASES)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A fresh, empty database of each kind."""
    url = new_postgres_database() if request.param == "postgresql" else ""
    yield Settings(data_dir=tmp_path, secret_key=secrets.token_urlsafe(48), database_url=url)
    if url:
        drop_postgres_database(url)


def run(settings: Settings, work: Any) -> Any:
    """Run `work(conn)` (a coroutine function) in one transaction on the database."""

    async def go() -> Any:
        engine = create_async_engine(settings.async_database_url)
        try:
            async with engine.begin() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@dataclass
class Before:
    """The database as a server of the old version left it: users by name, rooms by name."""

    user_ids: dict[str, int] = field(default_factory=dict)
    room_ids: dict[str, int] = field(default_factory=dict)
    message_count: int = 0


def build_before(
    settings: Settings,
    people: list[tuple[str, bool]],
    made: dict[str, str | None],
    posts: list[tuple[str, str]],
) -> Before:
    """Migrate to BEFORE and write, as its server would have: `people` (name, is_admin) in
    order of registration; the rooms `made` (name: creator, or None for `general`, which the
    migrations made); and `posts` (room, author) in order."""
    command.upgrade(alembic_config(settings), BEFORE)
    before = Before()

    async def write(conn: AsyncConnection) -> None:
        for n, (name, is_admin) in enumerate(people):
            before.user_ids[name] = await conn.scalar(
                users.insert()
                .values(
                    username=name,
                    username_key=name,
                    username_skeleton=name,
                    password_hash="x",
                    is_admin=is_admin,
                    is_active=True,
                    token_key=secrets.token_hex(8),
                    created_at=T0 + timedelta(minutes=n),
                )
                .returning(users.c.id)
            )
        before.room_ids = dict(
            (row.name, row.id) for row in await conn.execute(sa.select(rooms.c.name, rooms.c.id))
        )
        # The migrations made `general`, by nobody.
        assert list(before.room_ids) == ["general"]
        general = rooms.c.id == before.room_ids["general"]
        assert await conn.scalar(sa.select(rooms.c.created_by).where(general)) is None
        for name, creator in made.items():
            if creator is None:
                continue
            before.room_ids[name] = await conn.scalar(
                rooms.insert()
                .values(
                    name=name,
                    last_seq=0,
                    created_by=before.user_ids[creator],
                    created_at=T0 + timedelta(hours=1),
                )
                .returning(rooms.c.id)
            )
        seqs: dict[str, int] = {}
        for n, (room, author) in enumerate(posts):
            seqs[room] = seqs.get(room, 0) + 1
            await conn.execute(
                messages.insert().values(
                    room_id=before.room_ids[room],
                    seq=seqs[room],
                    user_id=before.user_ids[author],
                    body=f"message {n}",
                    nonce=None,
                    ts=T0 + timedelta(hours=2, minutes=n),
                )
            )
        for room, last in seqs.items():
            await conn.execute(
                rooms.update().where(rooms.c.id == before.room_ids[room]).values(last_seq=last)
            )
        before.message_count = len(posts)

    run(settings, write)
    return before


def memberships(settings: Settings) -> list[tuple[str, str, str]]:
    """Every membership as (room, user, role), sorted; duplicates would show twice."""

    async def read(conn: AsyncConnection) -> list[tuple[str, str, str]]:
        result = await conn.execute(
            sa.text(
                "SELECT rooms.name, users.username, memberships.role FROM memberships "
                "JOIN rooms ON rooms.id = memberships.room_id "
                "JOIN users ON users.id = memberships.user_id"
            )
        )
        return sorted((row[0], row[1], row[2]) for row in result)

    result: list[tuple[str, str, str]] = run(settings, read)
    return result


def joined_at(settings: Settings, before: Before, room: str, user: str) -> datetime:
    async def read(conn: AsyncConnection) -> datetime:
        query = sa.select(joined.c.joined_at).where(
            joined.c.room_id == before.room_ids[room], joined.c.user_id == before.user_ids[user]
        )
        found: datetime = (await conn.execute(query)).scalar_one()
        return found

    result: datetime = run(settings, read)
    return result


def room_rows(settings: Settings) -> dict[str, tuple[Any, ...]]:
    async def read(conn: AsyncConnection) -> dict[str, tuple[Any, ...]]:
        result = await conn.execute(sa.text("SELECT name, kind, topic, dm_key FROM rooms"))
        return {row[0]: tuple(row[1:]) for row in result}

    result: dict[str, tuple[Any, ...]] = run(settings, read)
    return result


def counts(settings: Settings) -> tuple[int, int, int]:
    """How many users, rooms and messages there are."""

    async def read(conn: AsyncConnection) -> tuple[int, int, int]:
        return (
            await conn.scalar(sa.text("SELECT COUNT(*) FROM users")),
            await conn.scalar(sa.text("SELECT COUNT(*) FROM rooms")),
            await conn.scalar(sa.text("SELECT COUNT(*) FROM messages")),
        )

    result: tuple[int, int, int] = run(settings, read)
    return result


def schema_diff(settings: Settings) -> list[Any]:
    async def read(conn: AsyncConnection) -> list[Any]:
        def diff(sync: sa.Connection) -> list[Any]:
            context = MigrationContext.configure(
                sync,
                opts={
                    "compare_type": True,
                    "compare_server_default": False,
                    # The search indexes are the migrations' alone (see chat.search.in_models).
                    "include_name": search.in_models,
                },
            )
            return list(compare_metadata(context, Base.metadata))

        return await conn.run_sync(diff)

    result: list[Any] = run(settings, read)
    return result


def table_names(settings: Settings) -> set[str]:
    async def read(conn: AsyncConnection) -> set[str]:
        return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))

    result: set[str] = run(settings, read)
    return result


# The people of a small server, in order of registration: the first account is not an
# admin (the first admin is the lowest id among admins, not the lowest id).
PEOPLE = [("carol", False), ("ann", True), ("abe", True), ("dave", False), ("eve", False)]
MADE: dict[str, str | None] = {"general": None, "lobby": "dave", "quiet": "carol"}
POSTS = [
    ("general", "carol"),
    ("general", "dave"),
    ("general", "carol"),
    ("lobby", "dave"),
    ("lobby", "carol"),
    ("lobby", "abe"),
    ("general", "carol"),
    ("lobby", "dave"),
    ("lobby", "carol"),
]


@pytest.mark.parametrize("first_admin_posted", [True, False])
def test_existing_rooms_and_posters_are_carried_forward(
    settings: Settings, first_admin_posted: bool
) -> None:
    """After the upgrade every existing room is `public` with topic "" and no DM key;
    everyone who posted in a room is a `member` of it once, however many messages they
    wrote; each room's creator is its `owner` (also of a room with no messages, and when
    they posted in it: promoted, not added twice); the first admin (lowest id among admins)
    owns `general`, whether they had posted there or not; nobody else gets a membership;
    a poster joined at their first message there; every user, room and message stays."""
    posts = [*POSTS, ("general", "ann"), ("general", "ann")] if first_admin_posted else POSTS
    before = build_before(settings, PEOPLE, MADE, posts)
    assert counts(settings) == (5, 3, len(posts))
    migrate(settings)
    assert counts(settings) == (5, 3, before.message_count)
    assert room_rows(settings) == {name: ("public", "", None) for name in MADE}
    assert memberships(settings) == [
        ("general", "ann", "owner"),
        ("general", "carol", "member"),
        ("general", "dave", "member"),
        ("lobby", "abe", "member"),
        ("lobby", "carol", "member"),
        ("lobby", "dave", "owner"),
        ("quiet", "carol", "owner"),
    ]
    # A poster joined with their first message there; a silent creator when they made it.
    assert joined_at(settings, before, "lobby", "carol") == T0 + timedelta(hours=2, minutes=4)
    assert joined_at(settings, before, "quiet", "carol") == T0 + timedelta(hours=1)
    assert schema_diff(settings) == []


def test_database_without_admin_upgrades(settings: Settings) -> None:
    """A database with no admin at all upgrades without error: `general` then has no
    owner, its posters are its members, and a user's room is still theirs."""
    people = [("carol", False), ("dave", False)]
    build_before(settings, people, {"general": None, "lobby": "dave"}, POSTS[:5])
    migrate(settings)
    assert memberships(settings) == [
        ("general", "carol", "member"),
        ("general", "dave", "member"),
        ("lobby", "carol", "member"),
        ("lobby", "dave", "owner"),
    ]
    assert room_rows(settings) == {
        "general": ("public", "", None),
        "lobby": ("public", "", None),
    }


def test_downgrade_to_before_and_upgrade_again(settings: Settings) -> None:
    """Downgrading to 0008 drops memberships, bans and the new room columns but keeps every
    user, room and message (on SQLite the rooms table stays AUTOINCREMENT); upgrading again
    derives the same memberships and yields exactly the models' schema."""
    build_before(settings, PEOPLE, MADE, POSTS)
    migrate(settings)
    upgraded = memberships(settings)
    assert upgraded
    command.downgrade(alembic_config(settings), BEFORE)
    tables = table_names(settings)
    assert {"users", "rooms", "messages"} <= tables
    assert not tables & {"memberships", "room_bans"}
    assert counts(settings) == (5, 3, len(POSTS))

    async def room_columns(conn: AsyncConnection) -> set[str]:
        columns = await conn.run_sync(lambda sync: sa.inspect(sync).get_columns("rooms"))
        return {column["name"] for column in columns}

    assert run(settings, room_columns) == {"id", "name", "last_seq", "created_by", "created_at"}
    if settings.is_sqlite:

        async def rooms_sql(conn: AsyncConnection) -> str:
            sql = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'rooms'"
            return str(await conn.scalar(sa.text(sql)))

        assert "AUTOINCREMENT" in run(settings, rooms_sql)
    migrate(settings)
    assert memberships(settings) == upgraded
    assert room_rows(settings) == {name: ("public", "", None) for name in MADE}
    assert schema_diff(settings) == []
