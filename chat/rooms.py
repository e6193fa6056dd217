"""Rooms: the directory of names, cached in memory because rooms are never deleted."""

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.errors import RoomExists, RoomNotFound, RoomQuotaReached
from chat.fields import is_valid_room_name
from chat.models import Room, User
from chat.ratelimit import MessageLimiter

# A page of the room list: everybody reads it, so its size is bounded.
ROOMS_DEFAULT_LIMIT = 100
ROOMS_MAX_LIMIT = 500


class RoomDirectory:
    """Looks rooms up by name; a hit costs no query after the first."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        creations: MessageLimiter,
        quota_per_user: int,
    ) -> None:
        self._sessions = sessions
        self._ids: dict[str, int] = {}
        # Rooms are never deleted and everybody lists them: each account makes few, slowly.
        self._creations = creations
        self._quota = quota_per_user

    async def id_of(self, name: str) -> int:
        """The room's id; raises RoomNotFound."""
        room_id = self._ids.get(name)
        if room_id is not None:
            return room_id
        if not is_valid_room_name(name):
            raise RoomNotFound()
        async with self._sessions() as session:
            room_id = await session.scalar(select(Room.id).where(Room.name == name))
        if room_id is None:
            raise RoomNotFound()
        self._ids[name] = room_id
        return room_id

    async def list(self, after: str = "", limit: int = ROOMS_DEFAULT_LIMIT) -> list[Room]:
        """Up to `limit` rooms in name order, those after the name `after`."""
        query = select(Room).where(Room.name > after).order_by(Room.name).limit(limit)
        async with self._sessions() as session:
            rooms = list(await session.scalars(query))
        self._ids.update((room.name, room.id) for room in rooms)
        return rooms

    async def create(self, name: str, creator: User) -> Room:
        """A new room; raises RoomExists, and for anyone but admins RateLimited or
        RoomQuotaReached."""
        if not creator.is_admin:
            await self._creations.acquire(f"room-create:{creator.id}")
        async with self._sessions() as session:
            if not creator.is_admin:
                await self._check_quota(session, creator.id)
            room = Room(name=name, created_by=creator.id)
            session.add(room)
            try:
                await session.commit()
            except IntegrityError:
                raise RoomExists() from None
        self._ids[room.name] = room.id
        return room

    async def _check_quota(self, session: AsyncSession, user_id: int) -> None:
        # The creator's row, locked (PostgreSQL), so that concurrent creations by one
        # account are counted one after another.
        await session.scalar(select(User.id).where(User.id == user_id).with_for_update())
        made = await session.scalar(
            select(func.count()).select_from(Room).where(Room.created_by == user_id)
        )
        if (made or 0) >= self._quota:
            raise RoomQuotaReached(self._quota)
