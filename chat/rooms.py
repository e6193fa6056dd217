"""Rooms: the directory of names, cached in memory because rooms are never deleted."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.errors import RoomExists, RoomNotFound
from chat.fields import is_valid_room_name
from chat.models import Room


class RoomDirectory:
    """Looks rooms up by name; a hit costs no query after the first."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._ids: dict[str, int] = {}

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

    async def list(self) -> list[Room]:
        async with self._sessions() as session:
            rooms = list(await session.scalars(select(Room).order_by(Room.name)))
        self._ids.update((room.name, room.id) for room in rooms)
        return rooms

    async def create(self, name: str) -> Room:
        async with self._sessions() as session:
            room = Room(name=name)
            session.add(room)
            try:
                await session.commit()
            except IntegrityError:
                raise RoomExists() from None
        self._ids[room.name] = room.id
        return room
