"""Every frame the server sends, built and encoded in one place.

An event is encoded to JSON once per room, never once per recipient.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from chat.messages import StoredMessage


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """An event for a room's sockets, as it travels from where it happens (the writer's
    commit, a socket, presence) through the broker to every process's hub."""

    room: str
    # The frame's "type".
    kind: str
    # The frame, encoded once.
    payload: bytes
    # A message's id, by which a room's messages are passed on in order; 0 for the rest.
    seq: int = 0
    # Not sent to this user's sockets (a typing hint goes to the others).
    skip_user: str | None = None


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def message_event(message: StoredMessage) -> dict[str, Any]:
    return {"type": "message", **message.as_dict()}


def presence_event(room: str, event: str, user: str, users: list[str]) -> dict[str, Any]:
    return {"type": "presence", "room": room, "event": event, "user": user, "users": users}


def typing_event(room: str, user: str) -> dict[str, Any]:
    return {"type": "typing", "room": room, "user": user}


def error_event(code: str, detail: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail}


def welcome_event(
    room: str, user: str, users: list[str], history: list[StoredMessage], truncated: bool
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "welcome",
        "room": room,
        "user": user,
        "users": users,
        "history": [m.as_dict() for m in history],
    }
    if truncated:
        event["truncated"] = True
    return event


def stats_event(
    rooms: dict[str, list[str]], connections: int, messages_per_sec: float, loop_lag_ms: float
) -> dict[str, Any]:
    return {
        "type": "stats",
        "rooms": rooms,
        "connections": connections,
        "messages_per_sec": round(messages_per_sec, 2),
        "loop_lag_ms": round(loop_lag_ms, 1),
    }
