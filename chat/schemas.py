"""The REST API's request and response bodies."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chat.accounts import PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS, USERNAME_PATTERN
from chat.messages import BODY_MAX_CHARS, NONCE_MAX_CHARS
from chat.rooms import ROOM_NAME_PATTERN

Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
Password = Annotated[
    str, StringConstraints(min_length=PASSWORD_MIN_CHARS, max_length=PASSWORD_MAX_CHARS)
]
RoomName = Annotated[str, StringConstraints(pattern=ROOM_NAME_PATTERN)]
# No NUL characters: PostgreSQL cannot store them in text.
NO_NUL_PATTERN = r"^[^\x00]*$"
Body = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=BODY_MAX_CHARS, pattern=NO_NUL_PATTERN
    ),
]
Nonce = Annotated[
    str, StringConstraints(min_length=1, max_length=NONCE_MAX_CHARS, pattern=NO_NUL_PATTERN)
]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class RegisterIn(Strict):
    username: Username
    password: Password


class UserOut(BaseModel):
    id: int
    username: str
    is_admin: bool


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="seconds")


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


class ErrorOut(BaseModel):
    detail: str


class HealthOut(BaseModel):
    status: str
