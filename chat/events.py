"""Every frame the server sends, typed and built in one place; and `RoomEvent`, the one
shape an event for a room's sockets has on its way from where it happens to every hub.

The TypedDicts are the wire protocol (SPEC "Room WebSocket" and "Admin"); `SERVER_FRAMES`
maps each frame's `type` to its definition, and a test checks what a live server sends
against it. An event is encoded to JSON once per room, never once per recipient.
"""

from dataclasses import dataclass
from typing import Any, Literal, NotRequired

import orjson
from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

from chat.messages import StoredMessage, format_ts

# What the wire definitions allow: exactly these keys, nothing else.
_EXACT = ConfigDict(extra="forbid")

ErrorCode = Literal[
    "invalid_json",
    "invalid_message",
    "too_large",
    "rate_limited",
    "forbidden",
    "not_found",
    "unavailable",
]


@with_config(_EXACT)
class MessageData(TypedDict):
    """A message as the API and every frame show it."""

    id: int
    room: str
    user: str
    body: str
    ts: str
    nonce: str | None
    # ISO 8601 UTC of the latest edit, or None.
    edited_at: str | None
    # A deleted message keeps id, user and ts; its body is "".
    deleted: bool
    # {emoji: [usernames, sorted]}
    reactions: dict[str, list[str]]
    # Usernames named as @username who can read the room, sorted.
    mentions: list[str]


@with_config(_EXACT)
class MessageFrame(MessageData):
    type: Literal["message"]


@with_config(_EXACT)
class UpdateFrame(TypedDict):
    """A message changed (edited, deleted, reacted to): its whole new state."""

    type: Literal["update"]
    message: MessageData


@with_config(_EXACT)
class WelcomeFrame(TypedDict):
    type: Literal["welcome"]
    room: str
    user: str
    users: list[str]
    history: list[MessageData]
    truncated: NotRequired[Literal[True]]
    # Only when resuming (`?since=`): the current state of every message up to `since`
    # changed after it, each once.
    updates: NotRequired[list[MessageData]]


@with_config(_EXACT)
class PresenceFrame(TypedDict):
    type: Literal["presence"]
    room: str
    event: Literal["join", "leave"]
    user: str
    users: list[str]


@with_config(_EXACT)
class TypingFrame(TypedDict):
    type: Literal["typing"]
    room: str
    user: str


@with_config(_EXACT)
class ErrorFrame(TypedDict):
    type: Literal["error"]
    code: ErrorCode
    detail: str
    # The refused frame's nonce, so that the client knows which message it was.
    nonce: NotRequired[str]
    # Seconds until a rate-limited message may be sent again.
    retry_after: NotRequired[float]


MemberEvent = Literal["join", "leave", "kick", "ban", "role"]


@with_config(_EXACT)
class MemberFrame(TypedDict):
    """A change of a room's membership: someone joined, left, was removed, banned, or given
    another role (`role`, also on a join)."""

    type: Literal["member"]
    room: str
    event: MemberEvent
    user: str
    role: NotRequired[str]


@with_config(_EXACT)
class StatsFrame(TypedDict):
    type: Literal["stats"]
    rooms: dict[str, list[str]]
    connections: int
    messages_per_sec: float
    loop_lag_ms: float
    # Frames handed to room sockets per second, over the same seconds as messages_per_sec.
    deliveries_per_sec: float


@with_config(_EXACT)
class ReadFrame(TypedDict):
    """The user's read marker in a room moved (SPEC "Attention"): to all their sockets."""

    type: Literal["read"]
    room: str
    up_to: int


@with_config(_EXACT)
class ActivityFrame(TypedDict):
    """New messages in a room of the user's that the socket is not looking at; at most
    once a second per room. `unread` counts up to `attention.UNREAD_CAP`."""

    type: Literal["activity"]
    room: str
    last_message_id: int
    unread: int
    mentions: int


RoomChange = Literal["created", "added", "changed", "deleted"]


@with_config(_EXACT)
class RoomFrame(TypedDict):
    """A room the user can see came to be (`created`: a new public room, their own, or a DM
    with them), was opened to them (`added`), changed (`changed`: its topic), or went away
    (`deleted`). The client reads the room object anew: `GET /api/rooms/{name}`."""

    type: Literal["room"]
    event: RoomChange
    room: str
    kind: str
    topic: str


@with_config(_EXACT)
class ReadyFrame(TypedDict):
    """The first frame of `/ws/me`: from now on the socket hears of the user's rooms."""

    type: Literal["ready"]
    user: str


AlertLevel = Literal["info", "warning", "critical"]
AlertKind = Literal[
    "user_registered",
    "login_throttled",
    "abuse_closed",
    "storage_unavailable",
    "storage_recovered",
    "broker_down",
    "broker_up",
    "node_joined",
    "node_left",
]


@with_config(_EXACT)
class AlertFrame(TypedDict):
    """Something an operator should know of (SPEC "Admin": alerts), on `/ws/admin` and in
    `GET /api/admin/alerts`. `ts` is when it happened, which for an alert stored late (the
    database was down) is earlier than when it was stored."""

    type: Literal["alert"]
    id: str
    level: AlertLevel
    kind: AlertKind
    detail: str
    ts: str


ServerFrame = (
    MessageFrame
    | UpdateFrame
    | WelcomeFrame
    | PresenceFrame
    | TypingFrame
    | MemberFrame
    | ErrorFrame
    | StatsFrame
    | ReadFrame
    | ActivityFrame
    | RoomFrame
    | ReadyFrame
    | AlertFrame
)

# Each frame type the server sends, by its "type".
SERVER_FRAMES: dict[str, type] = {
    "message": MessageFrame,
    "update": UpdateFrame,
    "welcome": WelcomeFrame,
    "presence": PresenceFrame,
    "typing": TypingFrame,
    "member": MemberFrame,
    "error": ErrorFrame,
    "stats": StatsFrame,
    "read": ReadFrame,
    "activity": ActivityFrame,
    "room": RoomFrame,
    "ready": ReadyFrame,
    "alert": AlertFrame,
}


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """An event for a room's sockets, as it travels from where it happens (the writer's
    commit, a socket, presence) through the broker to every process's hub."""

    room: str
    # The frame's "type".
    kind: str
    # The frame, encoded once.
    payload: bytes
    # Its number in the room's sequence, by which a room's messages and their changes are
    # passed on in order (a message's id, a change's own number); 0 for the rest.
    seq: int = 0
    # Not sent to this user's sockets (a typing hint goes to the others).
    skip_user: str | None = None


@with_config(_EXACT)
class EndSessionControl(TypedDict):
    """Between processes: these sessions ended; their sockets close everywhere."""

    type: Literal["end_session"]
    session_ids: list[str]


@with_config(_EXACT)
class EndUserControl(TypedDict):
    """Between processes: an account was deactivated; all its sockets close everywhere."""

    type: Literal["end_user"]
    user_id: int


@with_config(_EXACT)
class EndAdminControl(TypedDict):
    """Between processes: an account lost the admin role; its admin views close everywhere."""

    type: Literal["end_admin"]
    user_id: int


@with_config(_EXACT)
class EndMembershipControl(TypedDict):
    """Between processes: a user was removed from a room (kicked, banned, or left); their
    sockets in it close everywhere (4403)."""

    type: Literal["end_membership"]
    room: str
    user_id: int
    reason: str


@with_config(_EXACT)
class ReadControl(TypedDict):
    """Between processes: a user's read marker moved; every socket of theirs hears of it."""

    type: Literal["read"]
    user: str
    room: str
    up_to: int


@with_config(_EXACT)
class RoomControl(TypedDict):
    """Between processes: a room changed for these users (None: everybody, a public room);
    their `/ws/me` sockets hear of it."""

    type: Literal["room"]
    users: list[str] | None
    frame: RoomFrame


@with_config(_EXACT)
class AlertControl(TypedDict):
    """Between processes: an alert was raised; every admin view hears of it."""

    type: Literal["alert"]
    alert: AlertFrame


# What one process tells every other (and itself) outside any room.
ControlEvent = (
    EndSessionControl
    | EndUserControl
    | EndAdminControl
    | EndMembershipControl
    | ReadControl
    | RoomControl
    | AlertControl
)


def encode(frame: ServerFrame | dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def message_data(message: StoredMessage) -> MessageData:
    return {
        "id": message.id,
        "room": message.room,
        "user": message.user,
        "body": message.body,
        "ts": format_ts(message.ts),
        "nonce": message.nonce,
        "edited_at": None if message.edited_at is None else format_ts(message.edited_at),
        "deleted": message.deleted,
        "reactions": message.reactions,
        "mentions": list(message.mentions),
    }


def message_frame(message: StoredMessage) -> MessageFrame:
    return {"type": "message", **message_data(message)}


def message_event(message: StoredMessage) -> RoomEvent:
    """A stored message, for its room's sockets."""
    return RoomEvent(message.room, "message", encode(message_frame(message)), seq=message.id)


def update_event(message: StoredMessage, seq: int) -> RoomEvent:
    """A change of a stored message, numbered `seq` in its room's sequence, for its room's
    sockets: the message's whole state as it is now."""
    frame: UpdateFrame = {"type": "update", "message": message_data(message)}
    return RoomEvent(message.room, "update", encode(frame), seq=seq)


def presence_event(
    room: str, event: Literal["join", "leave"], user: str, users: list[str]
) -> RoomEvent:
    frame: PresenceFrame = {
        "type": "presence",
        "room": room,
        "event": event,
        "user": user,
        "users": users,
    }
    return RoomEvent(room, "presence", encode(frame))


def member_event(room: str, event: MemberEvent, user: str, role: str | None = None) -> RoomEvent:
    frame: MemberFrame = {"type": "member", "room": room, "event": event, "user": user}
    if role is not None:
        frame["role"] = role
    return RoomEvent(room, "member", encode(frame))


def typing_event(room: str, user: str) -> RoomEvent:
    frame: TypingFrame = {"type": "typing", "room": room, "user": user}
    return RoomEvent(room, "typing", encode(frame), skip_user=user)


def error_frame(
    code: ErrorCode, detail: str, nonce: str | None = None, retry_after: float | None = None
) -> ErrorFrame:
    frame: ErrorFrame = {"type": "error", "code": code, "detail": detail}
    if nonce is not None:
        frame["nonce"] = nonce
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


def welcome_frame(
    room: str,
    user: str,
    users: list[str],
    history: list[StoredMessage],
    truncated: bool,
    updates: list[StoredMessage] | None = None,
) -> WelcomeFrame:
    frame: WelcomeFrame = {
        "type": "welcome",
        "room": room,
        "user": user,
        "users": users,
        "history": [message_data(m) for m in history],
    }
    if truncated:
        frame["truncated"] = True
    if updates is not None:
        frame["updates"] = [message_data(m) for m in updates]
    return frame


def stats_frame(
    rooms: dict[str, list[str]],
    connections: int,
    messages_per_sec: float,
    loop_lag_ms: float,
    deliveries_per_sec: float,
) -> StatsFrame:
    return {
        "type": "stats",
        "rooms": rooms,
        "connections": connections,
        "messages_per_sec": round(messages_per_sec, 2),
        "loop_lag_ms": round(loop_lag_ms, 1),
        "deliveries_per_sec": round(deliveries_per_sec, 2),
    }
