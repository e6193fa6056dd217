"""The REST API's request and response bodies."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chat.events import AlertFrame
from chat.fields import (
    DM_OTHERS_MAX,
    DM_OTHERS_MIN,
    INVITE_HOURS_DEFAULT,
    INVITE_USES_DEFAULT,
    PASSWORD_MAX_CHARS,
    RESERVED_ROOM_NAME_RULE,
    USERNAME_PASSWORD_RULE,
    Body,
    CreatableKind,
    InviteCode,
    InviteHours,
    InviteUses,
    Nonce,
    Password,
    Role,
    RoomKind,
    RoomName,
    Topic,
    Username,
    is_reserved_room_name,
)


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class RegisterIn(Strict):
    username: Username
    password: Password
    invite: InviteCode | None = Field(
        None, description="needed when registration is by invite or closed"
    )

    @model_validator(mode="after")
    def _password_is_not_the_username(self) -> "RegisterIn":
        if self.password.lower() == self.username.lower():
            raise ValueError(USERNAME_PASSWORD_RULE)
        return self


class UserOut(BaseModel):
    id: int
    username: str
    is_admin: bool


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="seconds")
    refresh_token: str
    refresh_expires_in: int = Field(description="seconds the session lasts unused")


class MeOut(BaseModel):
    id: int
    username: str
    is_admin: bool
    created_at: datetime


class PasswordChangeIn(Strict):
    current_password: str = Field(max_length=PASSWORD_MAX_CHARS)
    # Checked by `fields.password_problem`, which knows the username too.
    new_password: str = Field(max_length=PASSWORD_MAX_CHARS)


class SessionOut(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    user_agent: str
    current: bool


class InviteIn(Strict):
    uses: InviteUses = INVITE_USES_DEFAULT
    expires_in_hours: InviteHours = INVITE_HOURS_DEFAULT


class InviteOut(BaseModel):
    code: str
    url: str = Field(description="the register page with the code filled in")
    uses_left: int
    expires_at: datetime
    created_at: datetime


class RoomIn(Strict):
    name: RoomName
    kind: CreatableKind = "public"
    topic: Topic = ""

    @model_validator(mode="after")
    def _name_is_not_reserved(self) -> "RoomIn":
        if is_reserved_room_name(self.name):
            raise ValueError(RESERVED_ROOM_NAME_RULE)
        return self


class RoomPatchIn(Strict):
    topic: Topic


class ReadIn(Strict):
    # Ids are 64-bit integers in the database.
    up_to: int = Field(ge=0, le=2**63 - 1, description="the newest message id read")


class RoomOut(BaseModel):
    name: str
    kind: RoomKind
    topic: str
    created_at: datetime
    active_users: int
    member_count: int
    is_member: bool
    role: Role | None = Field(description="the caller's role; null if not a member")
    unread: int = Field(description="the caller's unread messages")
    mentions: int = Field(description="how many of the unread messages mention the caller")
    last_message_id: int = Field(description="0 while the room has no messages")


class MemberOut(BaseModel):
    username: str
    role: Role


class RoleIn(Strict):
    role: Role


class BanOut(BaseModel):
    username: str


class DmIn(Strict):
    users: list[Username] = Field(
        min_length=DM_OTHERS_MIN,
        max_length=DM_OTHERS_MAX,
        description="the other people, not the caller",
    )


class MessageIn(Strict):
    body: Body
    nonce: Nonce | None = None


class MessageOut(BaseModel):
    id: int
    room: str
    user: str
    body: str
    ts: str = Field(description="ISO 8601, UTC")
    nonce: str | None
    edited_at: str | None = Field(description="ISO 8601, UTC, of the latest edit; or null")
    deleted: bool = Field(description="a deleted message keeps id, user and ts; body is empty")
    reactions: dict[str, list[str]] = Field(description="{emoji: [usernames, sorted]}")
    mentions: list[str] = Field(description="usernames mentioned who can read the room")


class MessageEditIn(Strict):
    body: Body


class MessagesOut(BaseModel):
    messages: list[MessageOut]


class ActiveUsersOut(BaseModel):
    rooms: dict[str, list[str]]


class AlertsOut(BaseModel):
    """Alerts, newest first; each as `/ws/admin` sends it."""

    alerts: list[AlertFrame]


class StatsPointOut(BaseModel):
    # The minute's start, ISO 8601 UTC.
    ts: str
    connections: int
    messages_per_sec: float
    deliveries_per_sec: float
    loop_lag_p99_ms: float


class StatsHistoryOut(BaseModel):
    """Per-minute points, oldest first: each node's, and the cluster's (sums; the worst
    lag of any node)."""

    minutes: int
    nodes: dict[str, list[StatsPointOut]]
    total: list[StatsPointOut]


class AdminUserOut(BaseModel):
    id: int
    username: str
    is_admin: bool
    is_active: bool
    created_at: datetime
    last_seen_at: datetime | None


class AdminUsersOut(BaseModel):
    users: list[AdminUserOut]
    total: int = Field(description="users matching the search, on all pages")


class AdminUserIn(Strict):
    is_admin: bool | None = None
    is_active: bool | None = None


class ErrorOut(BaseModel):
    detail: str


class HealthOut(BaseModel):
    status: str
