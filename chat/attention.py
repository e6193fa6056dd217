"""Attention (SPEC "Attention"): read markers, unread and mention counts, and the frames
that keep a user's sockets up to date about all their rooms (`read`, `activity`, `room`,
`member` on `/ws/me`).

- A read marker never moves back, and never past the room's sequence: a later `up_to` is
  clamped to the newest number the room has given (so a message posted later is never
  counted as read).
- A member's marker is set at the room's newest message when they join (also when they
  join again); a room's creator and a DM's members start at 0, the room being empty. A
  member without a marker (none exists after migration 0010) counts from 0.
- `unread` counts the caller's unread messages (after the marker, not their own, not
  deleted) up to `UNREAD_CAP`, among the first `UNREAD_SCAN` messages after the marker;
  `mentions` the mentions of them after the marker, up to the same cap. Non-members get 0.
  One query for a whole page of rooms: the counts are correlated subqueries over ranges
  of two indexes, each stopping at its limit: `ix_messages_room_seq_author` holds all
  that `unread` looks at (a room's messages lie scattered among the other rooms', so
  reading the rows themselves would cost a page each), `ix_mentions_user_room_seq` the
  mentions.
- `activity`: no work per recipient per message. A message event only marks its room as
  active on this process; the first one within a second schedules one flush a second later,
  for every room marked by then, that looks up each room's local members (cached in memory,
  kept current by member events) and counts for all of them in one query per room. Each
  socket gets its frames of the flush in one write: a user with sockets in many rooms is
  written to once a second, not once per room.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from sqlalchemy import Executable, Select, Subquery, and_, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat import events
from chat.events import ActivityFrame, ReadFrame, RoomEvent, RoomFrame
from chat.hub import Connection, Hub, kick_where
from chat.models import Membership, Mention, Message, ReadMarker, Room, User
from chat.rooms import RoomDirectory
from chat.transport import wire_frame

log = logging.getLogger(__name__)

# Counts stop here: reading a million unread messages to show "1000+" is wasted work.
UNREAD_CAP = 1000
# Messages after the marker looked at for `unread`: the count is exact up to the cap unless
# more than this less the cap of them are the reader's own or deleted.
UNREAD_SCAN = 2 * UNREAD_CAP
# An `activity` frame per room per user at most this often.
ACTIVITY_INTERVAL_SECS = 1.0
# Rooms whose members a process keeps in memory; past it, the longest kept is read anew
# when it is next needed.
MEMBER_CACHE_ROOMS = 2000
# Sockets written to between two yields to the event loop when a flush sends its frames.
SEND_CHUNK = 500


# -- read markers --------------------------------------------------------------------------


def _upsert(session: AsyncSession, user_id: int, room_id: int, up_to: int) -> Executable:
    """The marker set to `up_to` unless it is there already or further: the new value, or
    no row if it did not move."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ReadMarker).values(user_id=user_id, room_id=room_id, up_to=up_to)
    upsert: Executable = stmt.on_conflict_do_update(
        index_elements=[ReadMarker.user_id, ReadMarker.room_id],
        set_={"up_to": stmt.excluded.up_to},
        where=ReadMarker.up_to < stmt.excluded.up_to,
    ).returning(ReadMarker.up_to)
    return upsert


async def marker_of(session: AsyncSession, user_id: int, room_name: str) -> int:
    """How far the user has read the room (0: nothing, or no marker): where the room page
    draws its "New" line."""
    up_to = await session.scalar(
        select(ReadMarker.up_to)
        .join(Room, Room.id == ReadMarker.room_id)
        .where(ReadMarker.user_id == user_id, Room.name == room_name)
    )
    return int(up_to or 0)


async def mark_read(
    sessions: async_sessionmaker[AsyncSession], user_id: int, room_id: int, up_to: int
) -> int | None:
    """Move the user's marker in the room to `up_to` (clamped to the room's newest sequence
    number); the marker's new value, or None if it did not move (never backwards)."""
    async with sessions() as session:
        last = await session.scalar(select(Room.last_seq).where(Room.id == room_id)) or 0
        moved: int | None = await session.scalar(
            _upsert(session, user_id, room_id, min(up_to, last))
        )
        await session.commit()
    return moved


async def mark_joined(session: AsyncSession, user_id: int, room_id: int) -> None:
    """A new member has read what is there (in the caller's transaction)."""
    last = await session.scalar(select(Room.last_seq).where(Room.id == room_id)) or 0
    await session.execute(_upsert(session, user_id, room_id, last))


# -- counting ------------------------------------------------------------------------------


def _correlated(query: Select[*tuple[Any, ...]]) -> Subquery:
    return query.correlate(Membership, ReadMarker).subquery()


def _counts_query() -> Select[int, int, int, int]:
    """Per membership: room id, user id, unread messages, mentions (see the module)."""
    marker = func.coalesce(ReadMarker.up_to, 0)
    # The first messages after the marker: a plain range of the index in its order, which
    # every planner walks and stops at the limit (a filter on the author inside would let
    # PostgreSQL's estimates pick a scan of the whole range).
    after = _correlated(
        select(Message.user_id, Message.deleted)
        .where(Message.room_id == Membership.room_id, Message.seq > marker)
        .order_by(Message.seq)
        .limit(UNREAD_SCAN)
    )
    # Stopping at the cap's worth of others' messages: a room far behind is done after
    # about UNREAD_CAP entries of the index, not UNREAD_SCAN.
    counted = _correlated(
        select(literal(1).label("one"))
        .select_from(after)
        .where(after.c.user_id != Membership.user_id, after.c.deleted.is_(False))
        .limit(UNREAD_CAP)
    )
    unread = (
        select(func.count())
        .select_from(counted)
        .correlate(Membership, ReadMarker)
        .scalar_subquery()
    )
    mentioned_rows = _correlated(
        select(literal(1).label("one"))
        .where(
            Mention.user_id == Membership.user_id,
            Mention.room_id == Membership.room_id,
            Mention.message_seq > marker,
        )
        .order_by(Mention.message_seq)
        .limit(UNREAD_CAP)
    )
    mentioned = (
        select(func.count())
        .select_from(mentioned_rows)
        .correlate(Membership, ReadMarker)
        .scalar_subquery()
    )
    return (
        select(Membership.room_id, Membership.user_id, unread, mentioned)
        .select_from(Membership)
        .outerjoin(
            ReadMarker,
            and_(
                ReadMarker.user_id == Membership.user_id,
                ReadMarker.room_id == Membership.room_id,
            ),
        )
    )


def _capped(unread: int, mentions: int) -> tuple[int, int]:
    return min(unread, UNREAD_CAP), mentions


async def counts_for_rooms(
    session: AsyncSession, user_id: int, room_ids: list[int]
) -> dict[int, tuple[int, int]]:
    """The user's (unread, mentions) in those of the rooms they are a member of."""
    if not room_ids:
        return {}
    query = _counts_query().where(Membership.user_id == user_id, Membership.room_id.in_(room_ids))
    return {row[0]: _capped(row[2], row[3]) for row in await session.execute(query)}


async def counts_for_users(
    session: AsyncSession, room_id: int, user_ids: list[int]
) -> dict[int, tuple[int, int]]:
    """(unread, mentions) in the room of those of the users who are its members."""
    query = _counts_query().where(Membership.room_id == room_id, Membership.user_id.in_(user_ids))
    return {row[1]: _capped(row[2], row[3]) for row in await session.execute(query)}


# -- the sockets that listen to all of a user's rooms -------------------------------------


class MeSockets:
    """This process's `/ws/me` sockets, by user. Each is a hub `Connection` of no room,
    so that it has the same bounded buffers and is dropped the same way when too slow."""

    def __init__(self) -> None:
        self._by_user: dict[str, set[Connection]] = {}

    def add(self, connection: Connection) -> None:
        self._by_user.setdefault(connection.user, set()).add(connection)

    def remove(self, connection: Connection) -> None:
        own = self._by_user.get(connection.user)
        if own is not None:
            own.discard(connection)
            if not own:
                del self._by_user[connection.user]

    def of_user(self, user: str) -> tuple[Connection, ...]:
        return tuple(self._by_user.get(user, ()))

    def count(self, user: str) -> int:
        return len(self._by_user.get(user, ()))

    def users(self) -> Iterable[str]:
        return self._by_user.keys()

    def count_any(self) -> int:
        """How many users have a `/ws/me` socket here."""
        return len(self._by_user)

    def all(self) -> Iterator[Connection]:
        for own in self._by_user.values():
            yield from own

    def kick_sessions(self, session_ids: set[str], code: int, reason: str) -> None:
        kick_where(self.all(), lambda c: c.session_id in session_ids, code, reason)

    def kick_user(self, user_id: int, code: int, reason: str) -> None:
        kick_where(self.all(), lambda c: c.user_id == user_id, code, reason)


def _push(connections: Iterable[Connection], payload: bytes) -> None:
    for connection in connections:
        connection.push((0, payload))


class Attention:
    """Delivers `read`, `room`, `member` and `activity` frames to this process's sockets."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rooms: RoomDirectory,
        hub: Hub,
        me: MeSockets,
        interval_secs: float = ACTIVITY_INTERVAL_SECS,
    ) -> None:
        self._sessions = sessions
        self._rooms = rooms
        self._hub = hub
        self._me = me
        self._interval = interval_secs
        # Rooms with new messages not yet told of, and the newest message id in each.
        self._pending: dict[str, int] = {}
        # The members (usernames) of rooms that had activity here, kept current by member
        # events; a room's entry is read on its first flush.
        self._members: dict[str, set[str]] = {}
        # The next flush, for every room pending by then.
        self._tick: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Called for every batch of events from the broker: constant work per event.
    def on_events(self, room_events: list[RoomEvent]) -> None:
        for event in room_events:
            if event.kind == "message":
                self._active(event.room, event.seq)
            elif event.kind == "member":
                self._member_changed(event)

    def _active(self, room: str, message_id: int) -> None:
        pending = self._pending.get(room)
        if pending is not None:
            if message_id > pending:
                self._pending[room] = message_id
            return
        if not self._hub.connections and not self._me.count_any():
            return  # Nobody here to tell.
        self._pending[room] = message_id
        if self._tick is None:
            # One tick for every room: a socket gets its frames of all rooms in one write.
            # Ticks are at least an interval apart, so each room's frames are too.
            self._tick = asyncio.get_running_loop().call_later(self._interval, self._start_flush)

    def _start_flush(self) -> None:
        self._tick = None
        rooms, self._pending = self._pending, {}
        if not rooms:
            return
        task = asyncio.create_task(self._flush(rooms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, rooms: dict[str, int]) -> None:
        """Count for the rooms' members with a socket here, and send each socket its rooms'
        `activity` frames in one write."""
        # Per user: (the room, its frame) for each room of the tick that has news for them.
        frames: dict[str, list[tuple[str, bytes]]] = {}
        for room, last_message_id in rooms.items():
            try:
                counts = await self._count(room)
            except Exception as exc:  # The database may be briefly away; the next one tells.
                log.warning("activity of %s not sent: %s", room, exc)
                continue
            for user, (unread, mentions) in counts.items():
                frame: ActivityFrame = {
                    "type": "activity",
                    "room": room,
                    "last_message_id": last_message_id,
                    "unread": unread,
                    "mentions": mentions,
                }
                frames.setdefault(user, []).append((room, events.encode(frame)))
        await self._send(frames)

    async def _count(self, room: str) -> dict[str, tuple[int, int]]:
        """(unread, mentions) in the room of its members with a socket here not looking at
        it, by username."""
        members = self._members.get(room)
        if members is None:
            members = await self._load_members(room)
        # The room's members with a socket here: work in the room's size, not the server's.
        interested = [u for u in members if self._hub.user_connections(u) or self._me.count(u)]
        ids: dict[int, str] = {}
        for user in interested:
            sockets = [c for c in self._hub.of_user(user) if c.room != room]
            sockets += self._me.of_user(user)
            if sockets:
                ids[sockets[0].user_id] = user
        if not ids:
            return {}
        room_id = await self._rooms.id_of(room)
        async with self._sessions() as session:
            counts = await counts_for_users(session, room_id, list(ids))
        return {ids[user_id]: found for user_id, found in counts.items()}

    async def _send(self, frames: dict[str, list[tuple[str, bytes]]]) -> None:
        """Each user's frames to each of their sockets but for the room it looks at, in
        chunks: a storm's thousands of sockets are not written to in one step of the loop."""
        written = 0
        for user, theirs in frames.items():
            # The sockets of one room get the same frames: encoded once for all of them.
            wires: dict[str, tuple[list[tuple[int, bytes]], bytes]] = {}
            sockets = [*self._hub.of_user(user), *self._me.of_user(user)]
            for connection in sockets:
                found = wires.get(connection.room)
                if found is None:
                    # Numbered 0: outside the room's sequence.
                    unnumbered = [
                        (0, payload) for room, payload in theirs if room != connection.room
                    ]
                    found = wires[connection.room] = (
                        unnumbered,
                        b"".join(wire_frame(payload) for _, payload in unnumbered),
                    )
                unnumbered, wire = found
                if unnumbered and connection.close_code is None:
                    connection.push_run(unnumbered, wire)
                    written += 1
                    if written % SEND_CHUNK == 0:
                        await asyncio.sleep(0)

    async def _load_members(self, room: str) -> set[str]:
        room_id = await self._rooms.id_of(room)
        query = (
            select(User.username)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.room_id == room_id)
        )
        async with self._sessions() as session:
            members = set(await session.scalars(query))
        self._members[room] = members
        while len(self._members) > MEMBER_CACHE_ROOMS:
            del self._members[next(iter(self._members))]
        return members

    def _member_changed(self, event: RoomEvent) -> None:
        """Keep the room's cached members current, and tell the `/ws/me` sockets of the
        member concerned and of the room's members."""
        frame = orjson.loads(event.payload)
        user: str = frame["user"]
        members = self._members.get(event.room)
        if members is not None:
            if frame["event"] == "join":
                members.add(user)
            elif frame["event"] in ("leave", "kick", "ban"):
                members.discard(user)
        told = {user} | (members or set())
        for each in told & set(self._me.users()):
            _push(self._me.of_user(each), event.payload)

    def forget_members(self, room: str) -> None:
        """The room's membership changed in a way no member event told: read it anew."""
        self._members.pop(room, None)

    # -- control events --------------------------------------------------------------

    def on_read(self, user: str, room: str, up_to: int) -> None:
        frame: ReadFrame = {"type": "read", "room": room, "up_to": up_to}
        payload = events.encode(frame)
        _push(self._hub.of_user(user), payload)
        _push(self._me.of_user(user), payload)

    def on_room(self, users: list[str] | None, frame: RoomFrame) -> None:
        payload = events.encode(frame)
        if frame["event"] in ("added", "created"):
            self.forget_members(frame["room"])
        for user in list(self._me.users()) if users is None else users:
            _push(self._me.of_user(user), payload)

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
