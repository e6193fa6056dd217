"""The REST API's request and response bodies."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chat.fields import (
    INVITE_HOURS_DEFAULT,
    INVITE_USES_DEFAULT,
    PASSWORD_MAX_CHARS,
    USERNAME_PASSWORD_RULE,
    Body,
    InviteCode,
    InviteHours,
    InviteUses,
    Nonce,
    Password,
    RoomName,
    Username,
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


class RoomOut(BaseModel):
    name: str
    created_at: datetime
    active_users: int


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


class MessagesOut(BaseModel):
    messages: list[MessageOut]


class ActiveUsersOut(BaseModel):
    rooms: dict[str, list[str]]


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
