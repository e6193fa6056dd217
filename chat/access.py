"""Who may see and do what in a room: the one place that decides it.

`check` decides for one user and one room, from their `Standing`; every REST route, page,
socket and admin view asks it. `listed` and `readable` are the same rules as SQL, for the
queries that pick many rooms at once (the room list, search); a test holds the three to
agreement over every kind, role, ban and admin flag.

The rules (SPEC "Conversations"): a public room is open to everyone; a private room and a
DM exist only for their members: anyone else is told there is no such room (404, 4404),
exactly as for a name never used. A ban shuts someone out of a public or private room
(403, 4403). Site admins may do in public and private rooms whatever an owner may; a DM
is its members' alone, and has no roles and no moderation.
"""

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, exists, not_, or_
from sqlalchemy.orm import aliased

from chat.errors import Forbidden, RoomNotFound
from chat.fields import Role
from chat.models import Membership, Room, RoomBan, User

RANKS: dict[str | None, int] = {None: 0, "member": 1, "moderator": 2, "owner": 3}


class Action(StrEnum):
    # Know that the room exists: its object, its member list.
    SEE = "see"
    # Its history, its socket, who is in it and who is typing.
    READ = "read"
    POST = "post"
    # Become a member yourself; leave.
    JOIN = "join"
    LEAVE = "leave"
    # Make someone else a member.
    ADD = "add"
    # Kick, ban and lift bans (and, for the message lifecycle, delete others' messages).
    MODERATE = "moderate"
    SET_ROLE = "set_role"
    SET_TOPIC = "set_topic"


@dataclass(frozen=True, slots=True)
class Standing:
    """A user's place in one room: all `check` needs to decide."""

    room_id: int
    room: str
    kind: str
    is_admin: bool
    # The user's role if a member, else None.
    role: Role | None
    banned: bool

    @property
    def is_member(self) -> bool:
        return self.role is not None

    @property
    def acts_as_owner(self) -> bool:
        return self.role == "owner" or (self.is_admin and self.kind != "dm")

    @property
    def moderates(self) -> bool:
        return self.acts_as_owner or (self.role == "moderator" and self.kind != "dm")


def check(standing: Standing, action: Action) -> None:
    """Return if the user may do `action` in the room; else raise RoomNotFound (they may not
    even know it exists) or Forbidden (with the reason)."""
    kind = standing.kind
    if kind == "dm":
        if not standing.is_member:
            raise RoomNotFound()
        if action in (Action.LEAVE, Action.ADD):
            raise Forbidden("a direct conversation's members are fixed")
        if action in (Action.MODERATE, Action.SET_ROLE):
            raise Forbidden("direct conversations have no moderators")
        return
    if kind == "private" and not standing.is_member and not standing.is_admin:
        # Not even a ban tells them more: they were removed with it.
        raise RoomNotFound()
    if standing.banned and not standing.is_admin:
        raise Forbidden("banned from this room")
    if action in (Action.SEE, Action.READ, Action.POST, Action.JOIN, Action.LEAVE):
        return
    if action in (Action.ADD, Action.MODERATE, Action.SET_TOPIC):
        if not standing.moderates:
            raise Forbidden("only the room's owners and moderators may do that")
        return
    if action is Action.SET_ROLE and not standing.acts_as_owner:
        raise Forbidden("only the room's owners may change roles")


def check_over(standing: Standing, target_role: Role | None) -> None:
    """Moderating someone (kick, ban, a role change): owners act on anyone, moderators only
    on members and outsiders. Call after `check(standing, Action.MODERATE)`."""
    if standing.acts_as_owner:
        return
    if RANKS[target_role] >= RANKS[standing.role]:
        raise Forbidden("moderators may only act on members")


def listed(user_id: int) -> ColumnElement[bool]:
    """The rooms `GET /api/rooms` shows the user: every public room, and their own."""
    return or_(Room.kind == "public", _is_member(user_id))


def readable(user_id: int, is_admin: bool) -> ColumnElement[bool]:
    """The rooms whose messages the user may read (`check(..., Action.READ)` as SQL)."""
    ban = aliased(RoomBan)
    banned = exists().where(ban.room_id == Room.id, ban.user_id == user_id)
    if is_admin:
        return or_(Room.kind != "dm", _is_member(user_id))
    return or_(
        and_(Room.kind == "public", not_(banned)),
        and_(Room.kind == "private", _is_member(user_id), not_(banned)),
        and_(Room.kind == "dm", _is_member(user_id)),
    )


def reads() -> ColumnElement[bool]:
    """Whether the user of the row (`User`) may read the room of the row (`Room`): the
    same rule as `readable`, for a query over many users of one room (who a message's
    @mentions may name)."""
    ban = aliased(RoomBan)
    member = aliased(Membership)
    banned = exists().where(ban.room_id == Room.id, ban.user_id == User.id)
    is_member = exists().where(member.room_id == Room.id, member.user_id == User.id)
    return or_(
        and_(User.is_admin, Room.kind != "dm"),
        and_(Room.kind == "public", not_(banned)),
        and_(Room.kind == "private", is_member, not_(banned)),
        and_(Room.kind == "dm", is_member),
    )


def _is_member(user_id: int) -> ColumnElement[bool]:
    # An alias: the query around may join memberships itself, which would be correlated.
    member = aliased(Membership)
    return exists().where(member.room_id == Room.id, member.user_id == user_id)
