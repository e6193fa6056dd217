"""Rooms: the directory of names, cached in memory because rooms are never deleted and
never change kind."""

import secrets
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.errors import RoomExists, RoomNotFound, RoomQuotaReached
from chat.fields import DM_NAME_PREFIX, is_valid_room_name
from chat.models import Membership, Room, User
from chat.ratelimit import MessageLimiter

# A page of the room list: everybody reads it, so its size is bounded.
ROOMS_DEFAULT_LIMIT = 100
ROOMS_MAX_LIMIT = 500


class RoomRef(NamedTuple):
    id: int
    name: str
    kind: str


def dm_key(user_ids: set[int]) -> str:
    return ",".join(map(str, sorted(user_ids)))


class RoomDirectory:
    """Looks rooms up by name; a hit costs no query after the first."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        creations: MessageLimiter,
        quota_per_user: int,
    ) -> None:
        self._sessions = sessions
        self._refs: dict[str, RoomRef] = {}
        # Rooms are never deleted and everybody lists them: each account makes few, slowly.
        self._creations = creations
        self._quota = quota_per_user

    async def id_of(self, name: str) -> int:
        """The room's id; raises RoomNotFound."""
        return (await self.ref(name)).id

    async def ref(self, name: str) -> RoomRef:
        """The room's id and kind; raises RoomNotFound."""
        ref = self._refs.get(name)
        if ref is not None:
            return ref
        if not is_valid_room_name(name):
            raise RoomNotFound()
        async with self._sessions() as session:
            row = (
                await session.execute(select(Room.id, Room.kind).where(Room.name == name))
            ).first()
        if row is None:
            raise RoomNotFound()
        return self._remember(RoomRef(row.id, name, row.kind))

    def known(self, name: str) -> RoomRef | None:
        """The room if this process has looked it up before, without a query."""
        return self._refs.get(name)

    async def refs(self, names: list[str]) -> dict[str, RoomRef]:
        """The rooms of these names that exist, with one query for those not yet known."""
        missing = [n for n in names if n not in self._refs and is_valid_room_name(n)]
        if missing:
            query = select(Room.id, Room.name, Room.kind).where(Room.name.in_(missing))
            async with self._sessions() as session:
                for row in await session.execute(query):
                    self._remember(RoomRef(row.id, row.name, row.kind))
        return {n: self._refs[n] for n in names if n in self._refs}

    def _remember(self, ref: RoomRef) -> RoomRef:
        self._refs[ref.name] = ref
        return ref

    async def create(self, name: str, creator: User, kind: str = "public", topic: str = "") -> Room:
        """A new room, its creator its owner; raises RoomExists, and for anyone but admins
        RateLimited or RoomQuotaReached."""
        if not creator.is_admin:
            await self._creations.acquire(f"room-create:{creator.id}")
        async with self._sessions() as session:
            if not creator.is_admin:
                await self._check_quota(session, creator.id)
            room = Room(name=name, kind=kind, topic=topic, created_by=creator.id)
            session.add(room)
            try:
                await session.flush()
                session.add(Membership(room_id=room.id, user_id=creator.id, role="owner"))
                await session.commit()
            except IntegrityError:
                raise RoomExists() from None
        self._remember(RoomRef(room.id, room.name, room.kind))
        return room

    async def find_dm(self, user_ids: set[int]) -> Room | None:
        async with self._sessions() as session:
            return await session.scalar(select(Room).where(Room.dm_key == dm_key(user_ids)))

    async def create_dm(self, creator: User, user_ids: set[int]) -> tuple[Room, bool]:
        """The DM of exactly these people (the creator among them), and whether it is new:
        made once, also when two processes are asked at the same moment. Making one counts
        against the creator's rate of room creations (RateLimited), not their quota."""
        found = await self.find_dm(user_ids)
        if found is not None:
            return found, False
        await self._creations.acquire(f"dm-create:{creator.id}")
        async with self._sessions() as session:
            room = Room(
                name=DM_NAME_PREFIX + secrets.token_hex(8),
                kind="dm",
                dm_key=dm_key(user_ids),
                created_by=creator.id,
            )
            session.add(room)
            try:
                await session.flush()
                session.add_all(
                    Membership(room_id=room.id, user_id=user_id, role="member")
                    for user_id in user_ids
                )
                await session.commit()
            except IntegrityError:
                await session.rollback()
                found = await self.find_dm(user_ids)
                if found is None:
                    raise
                return found, False
        self._remember(RoomRef(room.id, room.name, room.kind))
        return room, True

    async def _check_quota(self, session: AsyncSession, user_id: int) -> None:
        # The creator's row, locked (PostgreSQL), so that concurrent creations by one
        # account are counted one after another.
        await session.scalar(select(User.id).where(User.id == user_id).with_for_update())
        made = await session.scalar(
            select(func.count())
            .select_from(Room)
            .where(Room.created_by == user_id, Room.kind != "dm")
        )
        if (made or 0) >= self._quota:
            raise RoomQuotaReached(self._quota)
