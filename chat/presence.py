"""Who is active in which room, counted per user however many sockets they hold."""

from collections import Counter


class Presence:
    """Active users per room in this process."""

    def __init__(self) -> None:
        self._rooms: dict[str, Counter[str]] = {}

    async def join(self, room: str, user: str) -> list[str] | None:
        """Count one more socket of `user`; the room's users if `user` just arrived."""
        sockets = self._rooms.setdefault(room, Counter())
        sockets[user] += 1
        return sorted(sockets) if sockets[user] == 1 else None

    async def leave(self, room: str, user: str) -> list[str] | None:
        """Count one socket less; the room's remaining users if `user` just left."""
        sockets = self._rooms.get(room)
        if sockets is None or sockets[user] == 0:
            return None
        sockets[user] -= 1
        if sockets[user] > 0:
            return None
        del sockets[user]
        if not sockets:
            del self._rooms[room]
        return sorted(sockets)

    async def users(self, room: str) -> list[str]:
        return sorted(self._rooms.get(room, ()))

    async def snapshot(self) -> dict[str, list[str]]:
        return {room: sorted(users) for room, users in sorted(self._rooms.items())}
