"""Rooms as their members see them: the room object, membership, roles, bans and DMs.

Every action asks `chat.access` first; every change reaches the room's sockets on every
process as a `member` frame, and a removal also closes the removed user's sockets in the
room (4403) everywhere, through a control event.
"""

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from chat import access, attention, events
from chat.access import Action, Standing
from chat.errors import Forbidden, LastOwner, NotAMember, RoomNotFound, UserNotFound
from chat.events import ControlEvent, MemberEvent, RoomChange, RoomEvent
from chat.fields import Role, is_valid_username
from chat.models import Membership, Message, Room, RoomBan, User
from chat.presence import Presence
from chat.ratelimit import MessageLimiter
from chat.rooms import ROOMS_DEFAULT_LIMIT, RoomDirectory, RoomRef
from chat.shared_reads import SharedReads

KICKED_REASON = "removed from the room"
BANNED_REASON = "banned from the room"
LEFT_REASON = "left the room"
# Taken with a room's id by every change that may take away one of its owners (PostgreSQL).
_OWNERS_LOCK = 0x6F776E


class Caller(Protocol):
    """Whoever asks: what access needs of a user."""

    @property
    def id(self) -> int: ...

    @property
    def is_admin(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class RoomView:
    """The room object (SPEC "Conversations"), as one caller sees it."""

    name: str
    kind: str
    topic: str
    created_at: datetime
    active_users: int
    member_count: int
    is_member: bool
    role: str | None
    unread: int
    mentions: int
    last_message_id: int
    # A DM's other members, for pages to name it by (not part of the API's room object).
    others: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberView:
    username: str
    role: str


# A room, the caller's role in it (None: not a member), and how many members it has.
_RoomQuery = Select[tuple[Room, str | None, int, int | None]]
Publish = Callable[[RoomEvent], Awaitable[None]]
PublishControl = Callable[[ControlEvent], Awaitable[None]]


class Conversations:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rooms: RoomDirectory,
        presence: Presence,
        publish: Publish,
        publish_control: PublishControl,
        changes: MessageLimiter,
    ) -> None:
        self._sessions = sessions
        # Membership changes per account (RateLimited): each one reaches a whole room.
        self._changes = changes
        self.rooms = rooms
        self._presence = presence
        self._publish = publish
        self._publish_control = publish_control
        # Standings read for many sockets at once (`standing`).
        self.standing_reads: SharedReads[Standing] = SharedReads()

    # -- deciding ------------------------------------------------------------------------

    async def standing(self, caller: Caller, name: str, shared: bool = False) -> Standing:
        """The caller's place in the room; RoomNotFound if there is no such room. `shared`:
        from a read shared with the caller's other askers of the moment, each one's read
        starting after it asked (a reconnect storm's sockets of one user and room)."""
        ref = await self.rooms.ref(name)
        if shared:
            key = (ref.id, caller.id, caller.is_admin)
            return await self.standing_reads.read(key, lambda: self._read_standing(caller, ref))
        return await self._read_standing(caller, ref)

    async def _read_standing(self, caller: Caller, ref: RoomRef) -> Standing:
        async with self._sessions() as session:
            return await _standing(session, caller, ref.id, ref.name, ref.kind)

    async def require(
        self, caller: Caller, name: str, action: Action, shared: bool = False
    ) -> Standing:
        """The caller's standing, if they may do `action` in the room; else RoomNotFound
        (also for a room they may not know of) or Forbidden. `shared`: see `standing`."""
        standing = await self.standing(caller, name, shared)
        access.check(standing, action)
        return standing

    async def _change(self, caller: User, name: str, action: Action) -> Standing:
        """`require`, then count the change against the caller's rate (RateLimited): only
        changes the caller may make are counted, and an outsider learns nothing from a 429."""
        standing = await self.require(caller, name, action)
        await self._changes.acquire(caller.username_key)
        return standing

    async def still_admitted(self, rooms_of: dict[int, set[str]]) -> dict[int, set[str]]:
        """Of each user's rooms (by user id), those whose sockets they may keep: rooms they
        may read and are a member of (opening a public room's socket makes one a member, so
        a socket there without a membership was kicked or left), or, for a site admin, a
        private room they may read without being a member."""
        async with self._sessions() as session:
            admins = set(
                await session.scalars(
                    select(User.id).where(User.id.in_(rooms_of), User.is_admin.is_(True))
                )
            )
            allowed: dict[int, set[str]] = {}
            for user_id, names in rooms_of.items():
                is_admin = user_id in admins
                member = exists().where(
                    Membership.room_id == Room.id, Membership.user_id == user_id
                )
                kept = or_(member, Room.kind == "private") if is_admin else member
                query = select(Room.name).where(
                    Room.name.in_(names), access.readable(user_id, is_admin), kept
                )
                allowed[user_id] = set(await session.scalars(query))
        return allowed

    async def operator_view(self, rooms: dict[str, list[str]]) -> dict[str, list[str]]:
        """Of who is in which room, what the admins' views show: the rooms an admin may read
        without being a member; never a DM."""
        refs = await self.rooms.refs(list(rooms))
        shown = {}
        for name, users in rooms.items():
            ref = refs.get(name)
            if ref is None:
                continue
            try:
                access.check(Standing(ref.id, name, ref.kind, True, None, False), Action.READ)
            except (RoomNotFound, Forbidden):
                continue
            shown[name] = users
        return shown

    # -- the room object -----------------------------------------------------------------

    async def list_rooms(
        self, caller: Caller, after: str = "", limit: int = ROOMS_DEFAULT_LIMIT
    ) -> list[RoomView]:
        """Public rooms and the caller's own, in name order, after the name `after`."""
        query = (
            _room_query(caller)
            .where(access.listed(caller.id), Room.name > after)
            .order_by(Room.name)
            .limit(limit)
        )
        return await self._views(caller, query)

    async def list_dms(self, caller: Caller, limit: int = ROOMS_DEFAULT_LIMIT) -> list[RoomView]:
        """The caller's DMs, the newest first: the pages list them apart from the rooms."""
        query = (
            _room_query(caller)
            .where(Room.kind == "dm", access.listed(caller.id))
            .order_by(Room.created_at.desc(), Room.name)
            .limit(limit)
        )
        return await self._views(caller, query)

    async def list_joined(self, caller: Caller, limit: int = ROOMS_DEFAULT_LIMIT) -> list[RoomView]:
        """The rooms (not DMs) the caller is a member of, in name order: the sidebar's."""
        query = (
            _room_query(caller)
            .where(Room.kind != "dm", Membership.user_id.is_not(None))
            .order_by(Room.name)
            .limit(limit)
        )
        return await self._views(caller, query)

    async def view(self, caller: Caller, name: str) -> RoomView:
        """One room, for a caller who may see it (RoomNotFound, Forbidden)."""
        standing = await self.require(caller, name, Action.SEE)
        query = _room_query(caller).where(Room.id == standing.room_id)
        return (await self._views(caller, query))[0]

    async def _views(self, caller: Caller, query: _RoomQuery) -> list[RoomView]:
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
            dms = [row.Room.id for row in rows if row.Room.kind == "dm"]
            others = await _dm_others(session, dms, caller.id) if dms else {}
            # Only a member has unread messages and mentions; one query for the page.
            joined = [row.Room.id for row in rows if row.role is not None]
            counts = await attention.counts_for_rooms(session, caller.id, joined)
        active = await self._presence.snapshot() if rows else {}
        views = []
        for row in rows:
            room: Room = row.Room
            views.append(
                RoomView(
                    name=room.name,
                    kind=room.kind,
                    topic=room.topic,
                    created_at=room.created_at,
                    active_users=len(active.get(room.name, ())),
                    member_count=row.member_count,
                    is_member=row.role is not None,
                    role=row.role,
                    unread=counts.get(room.id, (0, 0))[0],
                    mentions=counts.get(room.id, (0, 0))[1],
                    last_message_id=row.last_message_id or 0,
                    others=tuple(others.get(room.id, ())),
                )
            )
        return views

    async def create(self, caller: User, name: str, kind: str, topic: str) -> RoomView:
        """A new public or private room, the caller its owner (RoomExists, RoomQuotaReached,
        RateLimited)."""
        await self.rooms.create(name, caller, kind, topic)
        # Everybody can see a public room; a private one, only its owner for now.
        users = None if kind == "public" else [caller.username]
        await self._room_changed(users, "created", name, kind, topic)
        return await self.view(caller, name)

    async def set_topic(self, caller: User, name: str, topic: str) -> RoomView:
        standing = await self._change(caller, name, Action.SET_TOPIC)
        async with self._sessions() as session:
            await session.execute(
                update(Room).where(Room.id == standing.room_id).values(topic=topic)
            )
            await session.commit()
        users = None if standing.kind == "public" else await self._member_names(standing.room_id)
        await self._room_changed(users, "changed", name, standing.kind, topic)
        return await self.view(caller, name)

    # -- membership ----------------------------------------------------------------------

    async def members(self, caller: Caller, name: str) -> list[MemberView]:
        standing = await self.require(caller, name, Action.SEE)
        query = (
            select(User.username, Membership.role)
            .join(User, User.id == Membership.user_id)
            .where(Membership.room_id == standing.room_id)
            .order_by(User.username_key)
        )
        async with self._sessions() as session:
            return [MemberView(row.username, row.role) for row in await session.execute(query)]

    async def banned(self, caller: Caller, name: str) -> list[str]:
        standing = await self.require(caller, name, Action.MODERATE)
        query = (
            select(User.username)
            .join(RoomBan, RoomBan.user_id == User.id)
            .where(RoomBan.room_id == standing.room_id)
            .order_by(User.username_key)
        )
        async with self._sessions() as session:
            return list(await session.scalars(query))

    async def join(self, caller: User, standing: Standing) -> None:
        """Make the caller a member of a room they may join (see `access`), announcing it
        if they were not one."""
        access.check(standing, Action.JOIN)
        if standing.is_member:
            return
        if await self._insert_member(standing.room_id, caller.id, "member"):
            await self._announce(standing.room, "join", caller.username, "member")

    async def join_by_use(self, caller: User, standing: Standing) -> None:
        """Opening a public room's socket, or posting in it, makes one a member. Only a
        public room's: an admin looking into a private room does not become one of it."""
        if standing.kind == "public" and not standing.is_member:
            await self.join(caller, standing)

    async def put_member(self, caller: User, name: str, username: str) -> None:
        """`PUT .../members/{username}`: join yourself, or add someone."""
        if username.lower() == caller.username_key:
            await self.join(caller, await self._change(caller, name, Action.JOIN))
            return
        standing = await self._change(caller, name, Action.ADD)
        target = await self._user(username)
        async with self._sessions() as session:
            is_banned = await session.scalar(
                select(RoomBan.user_id).where(
                    RoomBan.room_id == standing.room_id, RoomBan.user_id == target.id
                )
            )
        if is_banned is not None:
            # Lifting the ban is a separate, deliberate act.
            raise Forbidden("that user is banned from the room")
        if await self._insert_member(standing.room_id, target.id, "member"):
            await self._announce(standing.room, "join", target.username, "member")
            view = await self.view(caller, name)
            await self._room_changed([target.username], "added", name, view.kind, view.topic)

    async def delete_member(self, caller: User, name: str, username: str) -> None:
        """`DELETE .../members/{username}`: leave, or remove someone (a kick)."""
        if username.lower() == caller.username_key:
            standing = await self._change(caller, name, Action.LEAVE)
            if standing.is_member:
                await self._remove(standing, caller.id, caller.username, "leave", LEFT_REASON)
            return
        standing = await self._change(caller, name, Action.MODERATE)
        target = await self._user(username)
        role = await self._role_of(standing.room_id, target.id)
        if role is None:
            raise NotAMember()
        access.check_over(standing, role)
        await self._remove(standing, target.id, target.username, "kick", KICKED_REASON)

    async def ban(self, caller: User, name: str, username: str) -> None:
        standing = await self._change(caller, name, Action.MODERATE)
        target = await self._user(username)
        if target.id == caller.id:
            raise Forbidden("you cannot ban yourself")
        access.check_over(standing, await self._role_of(standing.room_id, target.id))
        await self._remove(
            standing, target.id, target.username, "ban", BANNED_REASON, banned_by=caller.id
        )

    async def unban(self, caller: User, name: str, username: str) -> None:
        standing = await self._change(caller, name, Action.MODERATE)
        target = await self._user(username)
        async with self._sessions() as session:
            await session.execute(
                delete(RoomBan).where(
                    RoomBan.room_id == standing.room_id, RoomBan.user_id == target.id
                )
            )
            await session.commit()

    async def set_role(self, caller: User, name: str, username: str, role: Role) -> None:
        standing = await self._change(caller, name, Action.SET_ROLE)
        target = await self._user(username)
        room_id = standing.room_id
        async with self._sessions() as session:
            current = await self._owners_locked(session, room_id, target.id)
            if current is None:
                raise NotAMember()
            if current == role:
                return
            # One statement checks and changes, so that nothing comes between on SQLite.
            changed = await session.scalar(
                update(Membership)
                .where(
                    Membership.room_id == room_id,
                    Membership.user_id == target.id,
                    or_(Membership.role != "owner", _another_owner(room_id, target.id)),
                )
                .values(role=role)
                .returning(Membership.role)
            )
            await session.commit()
        if changed is None:
            raise LastOwner()
        await self._announce(standing.room, "role", target.username, role)

    async def open_dm(self, caller: User, usernames: list[str]) -> tuple[RoomView, bool]:
        """The DM between the caller and these people, and whether it is new (UserNotFound)."""
        keys = {name.lower() for name in usernames}
        async with self._sessions() as session:
            found = dict(
                (row.username_key, row.id)
                for row in await session.execute(
                    select(User.username_key, User.id).where(User.username_key.in_(keys))
                )
            )
        missing = sorted(keys - found.keys())
        if missing:
            raise UserNotFound()
        room, created = await self.rooms.create_dm(caller, {caller.id, *found.values()})
        if created:
            members = await self._member_names(room.id)
            await self._room_changed(members, "created", room.name, room.kind, room.topic)
        return await self.view(caller, room.name), created

    # -- helpers -------------------------------------------------------------------------

    async def _user(self, username: str) -> User:
        # A name no account can have is not looked up: PostgreSQL refuses text with NUL.
        if not is_valid_username(username):
            raise UserNotFound()
        async with self._sessions() as session:
            user = await session.scalar(select(User).where(User.username_key == username.lower()))
        if user is None:
            raise UserNotFound()
        return user

    async def _role_of(self, room_id: int, user_id: int) -> Role | None:
        async with self._sessions() as session:
            role = await session.scalar(
                select(Membership.role).where(
                    Membership.room_id == room_id, Membership.user_id == user_id
                )
            )
        return role  # type: ignore[return-value]

    async def _insert_member(self, room_id: int, user_id: int, role: Role) -> bool:
        """Add a membership; False if there was one already. Forbidden if the user is
        banned: a ban may land after the caller's standing was read. The check is the
        insert's own statement, and on PostgreSQL it takes turns with removals and bans under
        the room's lock, so that a banned user never stays a member."""
        banned = exists().where(RoomBan.room_id == room_id, RoomBan.user_id == user_id)
        row = select(literal(room_id), literal(user_id), literal(role)).where(~banned)
        async with self._sessions() as session:
            await self._owners_locked(session, room_id, user_id)
            try:
                added = await session.scalar(
                    insert(Membership)
                    .from_select(["room_id", "user_id", "role"], row)
                    .returning(Membership.user_id)
                )
                if added is not None:
                    # A new member starts with what is there read (`chat.attention`).
                    await attention.mark_joined(session, user_id, room_id)
                await session.commit()
            except IntegrityError:
                return False
        if added is None:
            raise Forbidden("banned from this room")
        return True

    async def _remove(
        self,
        standing: Standing,
        user_id: int,
        username: str,
        event: MemberEvent,
        reason: str,
        banned_by: int | None = None,
    ) -> None:
        """End a membership (and with `banned_by`, ban): the room hears of it, and the
        user's sockets in it close on every process. The last owner of a room with other
        members stays (LastOwner)."""
        room_id = standing.room_id
        async with self._sessions() as session:
            was = await self._owners_locked(session, room_id, user_id)
            # One statement checks and deletes, so that nothing comes between on SQLite.
            gone = await session.scalar(
                delete(Membership)
                .where(
                    Membership.room_id == room_id,
                    Membership.user_id == user_id,
                    or_(
                        Membership.role != "owner",
                        _another_owner(room_id, user_id),
                        ~_another_member(room_id, user_id),
                    ),
                )
                .returning(Membership.role)
            )
            if was is not None and gone is None:
                await session.rollback()
                raise LastOwner()
            if banned_by is not None:
                banned = await session.scalar(
                    select(RoomBan.user_id).where(
                        RoomBan.room_id == room_id, RoomBan.user_id == user_id
                    )
                )
                if banned is None:
                    session.add(RoomBan(room_id=room_id, user_id=user_id, banned_by=banned_by))
            # An IntegrityError: banned at the same moment by another moderator.
            with contextlib.suppress(IntegrityError):
                await session.commit()
        await self._publish_control(
            {"type": "end_membership", "room": standing.room, "user_id": user_id, "reason": reason}
        )
        await self._announce(standing.room, event, username)

    async def _owners_locked(self, session: AsyncSession, room_id: int, user_id: int) -> str | None:
        """The user's role in the room, read after taking the room's ownership lock: on
        PostgreSQL two owners demoting or removing each other at once would each still see
        the other as owner; there every such change takes turns (and so do joins with bans).
        SQLite runs one write at a time, and the change is one statement."""
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(select(func.pg_advisory_xact_lock(_OWNERS_LOCK, room_id)))
        return await session.scalar(
            select(Membership.role).where(
                Membership.room_id == room_id, Membership.user_id == user_id
            )
        )

    async def _member_names(self, room_id: int) -> list[str]:
        query = (
            select(User.username)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.room_id == room_id)
        )
        async with self._sessions() as session:
            return list(await session.scalars(query))

    async def _room_changed(
        self, users: list[str] | None, event: RoomChange, name: str, kind: str, topic: str
    ) -> None:
        """Tell these users' (None: everybody's) `/ws/me` sockets, on every process."""
        frame: events.RoomFrame = {
            "type": "room",
            "event": event,
            "room": name,
            "kind": kind,
            "topic": topic,
        }
        await self._publish_control({"type": "room", "users": users, "frame": frame})

    async def _announce(
        self, room: str, event: MemberEvent, username: str, role: str | None = None
    ) -> None:
        await self._publish(events.member_event(room, event, username, role))


def _another_owner(room_id: int, user_id: int) -> ColumnElement[bool]:
    other = aliased(Membership)
    return exists().where(other.room_id == room_id, other.user_id != user_id, other.role == "owner")


def _another_member(room_id: int, user_id: int) -> ColumnElement[bool]:
    other = aliased(Membership)
    return exists().where(other.room_id == room_id, other.user_id != user_id)


async def _standing(
    session: AsyncSession, caller: Caller, room_id: int, name: str, kind: str
) -> Standing:
    role = await session.scalar(
        select(Membership.role).where(
            Membership.room_id == room_id, Membership.user_id == caller.id
        )
    )
    banned = await session.scalar(
        select(RoomBan.user_id).where(RoomBan.room_id == room_id, RoomBan.user_id == caller.id)
    )
    return Standing(room_id, name, kind, caller.is_admin, role, banned is not None)  # type: ignore[arg-type]


def _room_query(caller: Caller) -> _RoomQuery:
    member_count = (
        select(func.count())
        .select_from(Membership)
        .where(Membership.room_id == Room.id)
        .correlate(Room)
        .scalar_subquery()
        .label("member_count")
    )
    # The newest message's id: the room's sequence also numbers changes of messages.
    last_message_id = (
        select(func.max(Message.seq))
        .where(Message.room_id == Room.id)
        .correlate(Room)
        .scalar_subquery()
        .label("last_message_id")
    )
    return select(Room, Membership.role, member_count, last_message_id).outerjoin(
        Membership, and_(Membership.room_id == Room.id, Membership.user_id == caller.id)
    )


async def _dm_others(
    session: AsyncSession, room_ids: list[int], caller_id: int
) -> dict[int, list[str]]:
    query = (
        select(Membership.room_id, User.username)
        .join(User, User.id == Membership.user_id)
        .where(Membership.room_id.in_(room_ids), Membership.user_id != caller_id)
        .order_by(User.username_key)
    )
    others: dict[int, list[str]] = {}
    for row in await session.execute(query):
        others.setdefault(row.room_id, []).append(row.username)
    return others
