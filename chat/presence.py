"""Who is active in which room, counted per user however many sockets they hold.

`MemoryPresence` knows this process only. `RedisPresence` shares it: each process
keeps its users in a sorted set per room, scored by an expiry it refreshes while
they stay; the users of a process that dies stop being refreshed, expire, and
whichever process sweeps them first announces that they left. The scripts that do
this atomically in Redis are in `lua/`.
"""

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Announces users that left with a process that died: (room, user, remaining users).
OnExpired = Callable[[str, str, list[str]], Awaitable[None]]


class Presence(Protocol):
    async def start(self, on_expired: OnExpired) -> None: ...

    async def stop(self) -> None: ...

    async def join(self, room: str, user: str) -> list[str] | None:
        """Count one more socket of `user`; the room's users if `user` just arrived."""

    async def leave(self, room: str, user: str) -> list[str] | None:
        """Count one socket less; the room's remaining users if `user` just left."""

    async def users(self, room: str) -> list[str]: ...

    async def snapshot(self) -> dict[str, list[str]]:
        """Every room with active users, and its users; both sorted."""


class LocalSockets:
    """Sockets per user per room in this process."""

    def __init__(self) -> None:
        self.rooms: dict[str, Counter[str]] = {}

    def add(self, room: str, user: str) -> bool:
        """True when this is the user's first socket in the room."""
        sockets = self.rooms.setdefault(room, Counter())
        sockets[user] += 1
        return sockets[user] == 1

    def remove(self, room: str, user: str) -> bool:
        """True when that was the user's last socket in the room."""
        sockets = self.rooms.get(room)
        if sockets is None or sockets[user] == 0:
            return False
        sockets[user] -= 1
        if sockets[user] > 0:
            return False
        del sockets[user]
        if not sockets:
            del self.rooms[room]
        return True

    def users(self, room: str) -> list[str]:
        return sorted(self.rooms.get(room, ()))


class MemoryPresence:
    """One process: its own sockets are everybody's."""

    def __init__(self) -> None:
        self._local = LocalSockets()

    async def start(self, on_expired: OnExpired) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def join(self, room: str, user: str) -> list[str] | None:
        return self._local.users(room) if self._local.add(room, user) else None

    async def leave(self, room: str, user: str) -> list[str] | None:
        return self._local.users(room) if self._local.remove(room, user) else None

    async def users(self, room: str) -> list[str]:
        return self._local.users(room)

    async def snapshot(self) -> dict[str, list[str]]:
        return {room: sorted(users) for room, users in sorted(self._local.rooms.items())}


def _script(name: str) -> str:
    """A script of `lua/`, after the prelude it shares with the others."""
    lua = resources.files("chat") / "lua"
    return (lua / "prelude.lua").read_text() + (lua / f"{name}.lua").read_text()


_SCRIPTS = {
    name: _script(name) for name in ("join", "leave", "refresh", "sweep", "snapshot", "users")
}


def _users_of(members: list[Any]) -> list[str]:
    return sorted({_decode(m).split(":", 1)[1] for m in members})


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisPresence:
    """Every process's sockets, shared through Redis, with expiry for dead processes."""

    def __init__(self, redis: Any, ttl_secs: float, namespace: str) -> None:
        self._redis = redis
        self._rooms_key = f"{namespace}:presence-rooms"
        self._room_prefix = f"{namespace}:presence:"
        # A user of a dead process is swept out at most `ttl_secs` after its last
        # refresh: expiry after 3/4 of it, plus up to 1/4 until the next sweep.
        self._ttl_secs = ttl_secs * 0.75
        self._interval_secs = ttl_secs / 4
        self._node = uuid.uuid4().hex
        self._local = LocalSockets()
        self._scripts = {name: redis.register_script(source) for name, source in _SCRIPTS.items()}
        self._on_expired: OnExpired | None = None
        self._task: asyncio.Task[None] | None = None

    def _member(self, user: str) -> str:
        return f"{self._node}:{user}"

    async def start(self, on_expired: OnExpired) -> None:
        self._on_expired = on_expired
        self._task = asyncio.create_task(self._keep_alive(), name="presence-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def join(self, room: str, user: str) -> list[str] | None:
        if not self._local.add(room, user):
            return None
        try:
            out = await self._scripts["join"](
                keys=[self._room_prefix + room, self._rooms_key],
                args=[self._member(user), user, self._ttl_secs, room],
            )
        except Exception as exc:
            log.warning("presence join not shared: %s", exc)
            return self._local.users(room)
        return _users_of(out[1:]) if int(out[0]) else None

    async def leave(self, room: str, user: str) -> list[str] | None:
        if not self._local.remove(room, user):
            return None
        try:
            out = await self._scripts["leave"](
                keys=[self._room_prefix + room], args=[self._member(user), user]
            )
        except Exception as exc:
            log.warning("presence leave not shared: %s", exc)
            return self._local.users(room)
        return _users_of(out[1:]) if int(out[0]) else None

    async def users(self, room: str) -> list[str]:
        try:
            return _users_of(await self._scripts["users"](keys=[self._room_prefix + room]))
        except Exception as exc:
            log.warning("presence read from this process only: %s", exc)
            return self._local.users(room)

    async def snapshot(self) -> dict[str, list[str]]:
        try:
            out = await self._scripts["snapshot"](keys=[self._rooms_key], args=[self._room_prefix])
        except Exception as exc:
            log.warning("presence read from this process only: %s", exc)
            return {room: sorted(u) for room, u in sorted(self._local.rooms.items())}
        rooms: dict[str, list[str]] = {}
        i = 0
        while i < len(out):
            room, count = _decode(out[i]), int(out[i + 1])
            if count:
                rooms[room] = _users_of(out[i + 2 : i + 2 + count])
            i += 2 + count
        return dict(sorted(rooms.items()))

    async def _keep_alive(self) -> None:
        """Refresh this process's users before they expire; sweep out the expired."""
        while True:
            await asyncio.sleep(self._interval_secs)
            try:
                await self._refresh()
                await self._sweep()
            except Exception as exc:
                log.warning("presence refresh failed: %s", exc)

    async def _refresh(self) -> None:
        for room, users in list(self._local.rooms.items()):
            members = [self._member(user) for user in users]
            await self._scripts["refresh"](
                keys=[self._room_prefix + room], args=[self._ttl_secs, *members]
            )
            await self._redis.sadd(self._rooms_key, room)

    async def _sweep(self) -> None:
        assert self._on_expired is not None
        for raw_room in await self._redis.smembers(self._rooms_key):
            room = _decode(raw_room)
            out = [
                _decode(m)
                for m in await self._scripts["sweep"](
                    keys=[self._room_prefix + room, self._rooms_key], args=[room]
                )
            ]
            split = out.index("")
            expired, live = out[:split], out[split + 1 :]
            remaining = _users_of(live)
            for user in sorted(set(_users_of(expired)) - set(remaining)):
                await self._on_expired(room, user, remaining)
