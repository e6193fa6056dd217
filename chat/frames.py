"""The frames a client sends on a room's WebSocket, and the one function that reads them."""

from dataclasses import dataclass
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from chat.fields import (
    BODY_MAX_CHARS,
    EMOJI_RULE,
    MESSAGE_ID_RULE,
    NONCE_RULE,
    Body,
    Emoji,
    MessageId,
    Nonce,
    is_valid_nonce,
)


class _Frame(BaseModel):
    # Strict: "1" is no id and 1 is no bool. Unknown keys are ignored, so that a newer client
    # still talks to an older server.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class MessageFrame(_Frame):
    type: Literal["message"]
    body: Body
    nonce: Nonce | None = None


class TypingFrame(_Frame):
    type: Literal["typing"]


class EditFrame(_Frame):
    type: Literal["edit"]
    id: MessageId
    body: Body


class DeleteFrame(_Frame):
    type: Literal["delete"]
    id: MessageId


class ReactFrame(_Frame):
    type: Literal["react"]
    id: MessageId
    emoji: Emoji
    on: bool


ClientFrame = Annotated[
    MessageFrame | TypingFrame | EditFrame | DeleteFrame | ReactFrame, Field(discriminator="type")
]
_CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
_TYPES = ("message", "typing", "edit", "delete", "react")
_TYPE_NAMES = "'message', 'typing', 'edit', 'delete' or 'react'"
# What each field must be, for the error's detail: the client's input is never echoed.
_FIELD_RULES = {
    "body": "body must be a string",
    "nonce": f"nonce must be {NONCE_RULE}",
    "id": f"id must be {MESSAGE_ID_RULE}",
    "emoji": f"emoji must be {EMOJI_RULE}",
    "on": "on must be true or false",
}
_BODY_ERRORS = {
    "body_empty": "body is empty",
    "body_nul": "body must not contain NUL characters",
}


FrameErrorCode = Literal["invalid_json", "invalid_message", "too_large"]


@dataclass(frozen=True, slots=True)
class FrameError:
    """A refused frame: the spec's error code, one sentence for people, and the frame's nonce
    when it carried a valid one, so that the client knows which message was refused."""

    code: FrameErrorCode
    detail: str
    nonce: str | None = None


def parse_frame(text: str) -> ClientFrame | FrameError:
    """The client's frame, or why it is refused."""
    try:
        # orjson rather than pydantic's validate_json, which costs the same but takes NaN and
        # Infinity (not JSON) and stops at 200 levels of nesting where orjson goes to 1024.
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        # Also text nested deeper than 1024 levels, and lone surrogates ("\ud800"): they are
        # not Unicode text, and PostgreSQL could not store them.
        return FrameError("invalid_json", "frame is not valid JSON")
    if not isinstance(data, dict):
        return FrameError("invalid_message", "frame must be a JSON object")
    # Checked before pydantic, whose refusal of an unknown type would format all of it, however
    # deeply nested.
    if data.get("type") not in _TYPES:
        detail = f"type must be {_TYPE_NAMES}" if "type" in data else "type is missing"
        return FrameError("invalid_message", detail, _echoable(data.get("nonce")))
    try:
        return _CLIENT_FRAME.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        return _refusal(errors, _echoable(data.get("nonce")))


def _echoable(nonce: object) -> str | None:
    return nonce if isinstance(nonce, str) and is_valid_nonce(nonce) else None


def _refusal(errors: list[ErrorDetails], echoed: str | None) -> FrameError:
    # A body that is too long is refused as such whatever else is wrong, so that the client
    # learns to split it rather than to fix something else and be refused again.
    for error in errors:
        if error["type"] == "body_too_long":
            return FrameError("too_large", f"body is over {BODY_MAX_CHARS} characters", echoed)
    return FrameError("invalid_message", _detail(errors[0]), echoed)


def _detail(error: ErrorDetails) -> str:
    # Every error is about one field of the frame: its location is (type, field).
    kind, field = error["type"], str(error["loc"][1])
    if kind == "missing":
        return f"{field} is missing"
    return _BODY_ERRORS.get(kind) or _FIELD_RULES[field]
