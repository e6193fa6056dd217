"""Who is active in which room, counted per user however many sockets they hold,
and the live figures of every server process.

`MemoryPresence` knows this process only. `RedisPresence` shares it: each process
keeps its users in a sorted set per room, scored by an expiry it refreshes while
they stay; the users of a process that dies stop being refreshed, expire, and
whichever process sweeps them first announces that they left.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

log = logging.getLogger(__name__)

# Announces users that left with a process that died: (room, user, remaining users).
OnExpired = Callable[[str, str, list[str]], Awaitable[None]]
# This process's live figures: (open sockets, messages stored per second).
LocalFigures = Callable[[], tuple[int, float]]
FIGURES_INTERVAL_SECS = 1.0


class Presence(Protocol):
    async def start(self, on_expired: OnExpired, local_figures: LocalFigures) -> None: ...

    async def stop(self) -> None: ...

    async def join(self, room: str, user: str) -> list[str] | None:
        """Count one more socket of `user`; the room's users if `user` just arrived."""

    async def leave(self, room: str, user: str) -> list[str] | None:
        """Count one socket less; the room's remaining users if `user` just left."""

    async def users(self, room: str) -> list[str]: ...

    async def snapshot(self) -> dict[str, list[str]]:
        """Every room with active users, and its users; both sorted."""

    async def figures(self) -> tuple[int, float]:
        """Open sockets and messages stored per second, over every process."""


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
        self._local_figures: LocalFigures = lambda: (0, 0.0)

    async def start(self, on_expired: OnExpired, local_figures: LocalFigures) -> None:
        self._local_figures = local_figures

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

    async def figures(self) -> tuple[int, float]:
        return self._local_figures()


# Scripts run atomically in Redis, on Redis's clock, so hosts' clocks need not agree.
# Members are "NODE:USER"; a member's score is when it expires.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6 "
_LIVE = "local function live(key) return redis.call('ZRANGEBYSCORE', key, now, '+inf') end "
_HAS_OTHER = (
    "local function has_other(members, user, me) "
    "for _, m in ipairs(members) do "
    "if m ~= me and string.sub(m, string.find(m, ':') + 1) == user then return true end "
    "end return false end "
)
# KEYS: room set, rooms; ARGV: member, user, ttl, room -> {arrived, members...}
_JOIN = (
    _NOW + _LIVE + _HAS_OTHER + "local members = live(KEYS[1]) "
    "local arrived = has_other(members, ARGV[2], ARGV[1]) and 0 or 1 "
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) "
    "redis.call('SADD', KEYS[2], ARGV[4]) "
    "local out = live(KEYS[1]) table.insert(out, 1, arrived) return out"
)
# KEYS: room set; ARGV: member, user -> {left, members...}
_LEAVE = (
    _NOW + _LIVE + _HAS_OTHER + "redis.call('ZREM', KEYS[1], ARGV[1]) "
    "local members = live(KEYS[1]) "
    "local left = has_other(members, ARGV[2], ARGV[1]) and 0 or 1 "
    "table.insert(members, 1, left) return members"
)
# KEYS: room set; ARGV: ttl, members... (re-added if a sweep took them meanwhile)
_REFRESH = (
    _NOW + "for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end"
)
# KEYS: room set, rooms; ARGV: room -> {expired members..., '', live members...}
_SWEEP = (
    _NOW + _LIVE + "local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now) "
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now) "
    "if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end "
    "table.insert(expired, '') for _, m in ipairs(live(KEYS[1])) do table.insert(expired, m) end "
    "return expired"
)
# KEYS: rooms; ARGV: room key prefix -> {room, count, members..., room, count, members...}
_SNAPSHOT = (
    _NOW + _LIVE + "local out = {} for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
    "local members = live(ARGV[1] .. room) "
    "table.insert(out, room) table.insert(out, #members) "
    "for _, m in ipairs(members) do table.insert(out, m) end end return out"
)
_USERS = _NOW + _LIVE + "return live(KEYS[1])"


def _users_of(members: list[Any]) -> list[str]:
    return sorted({_decode(m).split(":", 1)[1] for m in members})


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisPresence:
    """Every process's sockets, shared through Redis, with expiry for dead processes."""

    def __init__(self, redis: Any, ttl_secs: float, namespace: str) -> None:
        self._redis = redis
        self._rooms_key = f"{namespace}:presence-rooms"
        self._nodes_key = f"{namespace}:nodes"
        self._room_prefix = f"{namespace}:presence:"
        # A user of a dead process is swept out at most `ttl_secs` after its last
        # refresh: expiry after 3/4 of it, plus up to 1/4 until the next sweep.
        self._ttl_secs = ttl_secs * 0.75
        self._interval_secs = ttl_secs / 4
        self._node = uuid.uuid4().hex
        self._local = LocalSockets()
        self._scripts = {
            name: redis.register_script(source)
            for name, source in {
                "join": _JOIN,
                "leave": _LEAVE,
                "refresh": _REFRESH,
                "sweep": _SWEEP,
                "snapshot": _SNAPSHOT,
                "users": _USERS,
            }.items()
        }
        self._on_expired: OnExpired | None = None
        self._local_figures: LocalFigures = lambda: (0, 0.0)
        self._tasks: list[asyncio.Task[None]] = []

    def _member(self, user: str) -> str:
        return f"{self._node}:{user}"

    async def start(self, on_expired: OnExpired, local_figures: LocalFigures) -> None:
        self._on_expired, self._local_figures = on_expired, local_figures
        self._tasks = [
            asyncio.create_task(self._keep_alive(), name="presence-refresh"),
            asyncio.create_task(self._report_figures(), name="figures-report"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._redis.hdel(self._nodes_key, self._node)

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

    async def figures(self) -> tuple[int, float]:
        now = time.time()
        try:
            nodes = await self._redis.hgetall(self._nodes_key)
        except Exception as exc:
            log.warning("figures of this process only: %s", exc)
            return self._local_figures()
        # This process's own figures fresh, the others' as last reported.
        total_connections, total_rate = self._local_figures()
        stale = []
        for node, raw in nodes.items():
            if _decode(node) == self._node:
                continue
            figures = orjson.loads(raw)
            if figures["until"] < now:
                stale.append(node)
                continue
            total_connections += figures["connections"]
            total_rate += figures["rate"]
        if stale:
            with contextlib.suppress(Exception):
                await self._redis.hdel(self._nodes_key, *stale)
        return total_connections, total_rate

    async def _report_figures(self) -> None:
        while True:
            connections, rate = self._local_figures()
            mine = {
                "connections": connections,
                "rate": rate,
                "until": time.time() + FIGURES_INTERVAL_SECS * 5,
            }
            try:
                await self._redis.hset(self._nodes_key, self._node, orjson.dumps(mine))
            except Exception as exc:
                log.warning("figures not shared: %s", exc)
            await asyncio.sleep(FIGURES_INTERVAL_SECS)

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
