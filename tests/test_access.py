"""`chat.access`, the one place that decides who may see and do what in a room: its rules
are SPEC v2 "Conversations", and its SQL clauses (`readable`, `listed`) say the same as
`check` on a real database, for every kind x role x ban x admin flag."""

import asyncio
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy import select, true, update

from chat import access
from chat.access import Action, Standing
from chat.db import create_engine, migrate, session_factory
from chat.errors import Forbidden, RoomNotFound
from chat.fields import Role
from chat.models import Membership, Room, RoomBan, User
from chat.settings import Settings
from tests.conftest import drop_postgres_database, make_settings

Outcome = Literal["ok", "404", "403"]
KINDS = ("public", "private", "dm")
ROLES: tuple[Role | None, ...] = (None, "member", "moderator", "owner")
BANNED = (False, True)
ADMIN = (False, True)
COMBINATIONS = list(itertools.product(KINDS, ROLES, BANNED, ADMIN))


def outcome(standing: Standing, action: Action) -> Outcome:
    try:
        access.check(standing, action)
    except RoomNotFound:
        return "404"
    except Forbidden:
        return "403"
    return "ok"


def spec(kind: str, role: Role | None, banned: bool, admin: bool, action: Action) -> Outcome:
    """What SPEC "Conversations" says, written out on its own: a DM is its members' alone and
    has fixed members and no moderation; a private room does not exist for non-members
    (admins aside); a ban shuts out (admins aside); owners and admins do anything, moderators
    add, moderate and set the topic, everyone else reads, posts, joins and leaves."""
    if kind == "dm":
        if role is None:
            return "404"
        if action in (Action.LEAVE, Action.ADD, Action.MODERATE, Action.SET_ROLE):
            return "403"
        return "ok"
    if kind == "private" and role is None and not admin:
        return "404"
    if banned and not admin:
        return "403"
    if action in (Action.SEE, Action.READ, Action.POST, Action.JOIN, Action.LEAVE):
        return "ok"
    owner = admin or role == "owner"
    if action is Action.SET_ROLE:
        return "ok" if owner else "403"
    return "ok" if owner or role == "moderator" else "403"


@dataclass(frozen=True)
class World:
    """Rows in a real database, and what the SQL clauses select from them."""

    # The room of each kind that the users below have their roles and bans in.
    rooms: dict[str, int]
    # Rooms of each kind none of those users is in.
    elsewhere: dict[str, int]
    kind_of: dict[int, str]
    # A user for each (role, banned): that role and ban in each room of `rooms`.
    users: dict[tuple[Role | None, bool], int]
    # (user id, is_admin) -> the ids of the rooms `access.readable` selects.
    readable: dict[tuple[int, bool], set[int]]
    # user id -> the ids of the rooms `access.listed` selects.
    listed: dict[int, set[int]]
    # (user id, is_admin) -> the ids of the rooms `access.reads` pairs the user with, the
    # user's row saying whether they are an admin.
    reads: dict[tuple[int, bool], set[int]]


async def build(settings: Settings) -> World:
    engine = create_engine(settings)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:

            def person(name: str) -> User:
                user = User(
                    username=name,
                    username_key=name,
                    username_skeleton=name,
                    password_hash="x",
                )
                session.add(user)
                return user

            people = {
                (role, banned): person(f"u-{role or 'none'}-{'banned' if banned else 'ok'}")
                for role in ROLES
                for banned in BANNED
            }
            stranger = person("stranger")
            made = {kind: Room(name=f"in-{kind}", kind=kind) for kind in KINDS}
            other = {kind: Room(name=f"other-{kind}", kind=kind) for kind in KINDS}
            session.add_all([*made.values(), *other.values()])
            await session.flush()
            for room in made.values():
                for (role, banned), user in people.items():
                    if role is not None:
                        session.add(Membership(room_id=room.id, user_id=user.id, role=role))
                    if banned:
                        session.add(RoomBan(room_id=room.id, user_id=user.id))
            for room in other.values():
                session.add(Membership(room_id=room.id, user_id=stranger.id, role="owner"))
            await session.commit()

            kind_of = dict(
                (row.id, row.kind) for row in await session.execute(select(Room.id, Room.kind))
            )
            readable = {}
            listed = {}
            for user in [*people.values(), stranger]:
                for admin in ADMIN:
                    query = select(Room.id).where(access.readable(user.id, admin))
                    readable[user.id, admin] = set(await session.scalars(query))
                listed[user.id] = set(
                    await session.scalars(select(Room.id).where(access.listed(user.id)))
                )
            reads = {}
            for admin in ADMIN:
                await session.execute(update(User).values(is_admin=admin))
                for user in [*people.values(), stranger]:
                    query = (
                        select(Room.id)
                        .select_from(User)
                        .join(Room, true())
                        .where(User.id == user.id, access.reads())
                    )
                    reads[user.id, admin] = set(await session.scalars(query))
            await session.execute(update(User).values(is_admin=False))
            return World(
                rooms={kind: room.id for kind, room in made.items()},
                elsewhere={kind: room.id for kind, room in other.items()},
                kind_of=kind_of,
                users={key: user.id for key, user in people.items()},
                readable=readable,
                listed=listed,
                reads=reads,
            )
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A fresh database (SQLite, or PostgreSQL when the suite runs on it), migrated, with the
    rows made through the app's own engine and models."""
    settings = make_settings(Path(tmp_path_factory.mktemp("access")))
    try:
        # In threads of their own: migrations and the engine each run an event loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(migrate, settings).result()
            built = pool.submit(asyncio.run, build(settings)).result()
        yield built
    finally:
        if settings.database_url.startswith("postgresql://"):
            drop_postgres_database(settings.database_url)


@pytest.mark.parametrize(
    ("kind", "role", "banned", "admin"),
    COMBINATIONS,
    ids=[
        "-".join(
            (kind, role or "outsider", "banned" if banned else "free", "admin" if admin else "user")
        )
        for kind, role, banned, admin in COMBINATIONS
    ],
)
def test_read_check_agrees_with_the_sql(
    world: World, kind: str, role: Role | None, banned: bool, admin: bool
) -> None:
    """`check(standing, READ)` lets the user read exactly the rooms `readable(...)` selects
    on the database, and both follow the spec: a private room or DM does not exist for a
    non-member (404; admins may read private rooms, never others' DMs), a ban shuts out of a
    public or private room (403; not an admin), anyone else reads."""
    room_id = world.rooms[kind]
    standing = Standing(room_id, f"in-{kind}", kind, admin, role, banned)
    by_check = outcome(standing, Action.READ)
    assert by_check == spec(kind, role, banned, admin, Action.READ)
    by_sql = room_id in world.readable[world.users[role, banned], admin]
    assert by_sql == (by_check == "ok")


def test_readable_agrees_with_check_in_every_room(world: World) -> None:
    """Over every room in the database (the users' own and others'), `readable` selects for
    each user and admin flag exactly the rooms `check(..., READ)` allows."""
    rooms_in = set(world.rooms.values())
    for (role, banned), user_id in world.users.items():
        for admin in ADMIN:
            allowed = set()
            for room_id, kind in world.kind_of.items():
                mine = room_id in rooms_in
                standing = Standing(
                    room_id, "", kind, admin, role if mine else None, banned and mine
                )
                if outcome(standing, Action.READ) == "ok":
                    allowed.add(room_id)
            assert world.readable[user_id, admin] == allowed, (role, banned, admin)
    # Positive control: the outsiders read public rooms, a member the DM, an admin the
    # private room of others.
    outsider = world.users[None, False]
    assert world.elsewhere["public"] in world.readable[outsider, False]
    assert world.rooms["dm"] in world.readable[world.users["member", True], False]
    assert world.elsewhere["private"] in world.readable[outsider, True]
    assert world.elsewhere["dm"] not in world.readable[outsider, True]


def test_reads_agrees_with_readable(world: World) -> None:
    """`reads`, the clause over a user's row that decides who a message's @mentions may
    name, selects for every user and admin flag exactly the rooms `readable` does."""
    assert world.reads.keys() == world.readable.keys()
    for key, rooms in world.readable.items():
        assert world.reads[key] == rooms, key
    # Positive control: some rooms are read, not all by everyone.
    assert any(world.reads.values()) and len({frozenset(r) for r in world.reads.values()}) > 1


def test_listed_is_public_rooms_and_the_users_own(world: World) -> None:
    """`listed` (the room list) selects exactly the public rooms and the rooms the user is a
    member of (private rooms and DMs included, banned or not), whatever their role."""
    public = {room_id for room_id, kind in world.kind_of.items() if kind == "public"}
    assert len(public) >= 2
    for (role, _banned), user_id in world.users.items():
        own = set(world.rooms.values()) if role is not None else set()
        assert world.listed[user_id] == public | own, role
    assert world.elsewhere["private"] not in world.listed[world.users["owner", False]]


def test_every_action_follows_the_spec() -> None:
    """For every action, kind, role, ban and admin flag, `check` answers what the spec says
    (see `spec`)."""
    wrong = []
    for (kind, role, banned, admin), action in itertools.product(COMBINATIONS, Action):
        got = outcome(Standing(1, "r", kind, admin, role, banned), action)
        if got != spec(kind, role, banned, admin, action):
            wrong.append((kind, role, banned, admin, action.value, got))
    assert not wrong


@pytest.mark.parametrize("kind", ["public", "private"])
def test_moderators_act_on_members_only(kind: str) -> None:
    """`check_over`: moderators act on members and outsiders, not on moderators or owners
    (403); owners and admins act on anyone."""

    def over(role: Role | None, admin: bool, target: Role | None) -> Outcome:
        standing = Standing(1, "r", kind, admin, role, False)
        try:
            access.check(standing, Action.MODERATE)
            access.check_over(standing, target)
        except Forbidden:
            return "403"
        return "ok"

    for target in ROLES:
        expected: Outcome = "ok" if target in (None, "member") else "403"
        assert over("moderator", False, target) == expected, target
        assert over("owner", False, target) == "ok", target
        assert over(None, True, target) == "ok", target
        assert over("member", False, target) == "403", target
