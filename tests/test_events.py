"""The wire protocol as code: every frame a live server sends matches its typed definition."""

from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from chat.events import SERVER_FRAMES
from tests.conftest import Server, of_type, recv, recv_until
from tests.ws_helpers import own_message, post, send, welcome

ADAPTERS = {kind: TypeAdapter(definition) for kind, definition in SERVER_FRAMES.items()}


def conforms(frame: dict[str, Any]) -> None:
    ADAPTERS[frame["type"]].validate_python(frame, strict=True)


def test_every_frame_kind_a_server_sends_matches_its_definition(make_server: Any) -> None:
    """A session that provokes every kind of frame: each one received has a definition, and
    matches it exactly (no key missing, none extra, no wrong type)."""
    srv: Server = make_server(rate_burst=2, rate_per_sec=0.1)
    assert srv.admin is not None
    amy, zed = srv.register(), srv.register()
    room = srv.create_room(amy)
    path = f"/ws/rooms/{room}"
    seen: list[dict[str, Any]] = []
    with (
        srv.ws("/ws/admin", srv.admin) as admin,
        srv.ws(path, amy) as wa,
        srv.ws("/ws/me", amy) as me,
    ):
        seen += [recv(admin), welcome(wa), recv(me)]
        # A registration is an alert on every admin view.
        srv.register()
        seen.append(recv_until(admin, lambda f: f.get("kind") == "user_registered"))
        with srv.ws(path, zed) as wz:
            seen.append(welcome(wz))
            # Opening a public room's socket makes zed a member: that comes first.
            seen.append(recv_until(wa, of_type("member", event="join", user=zed.username)))
            seen.append(recv_until(wa, of_type("presence", event="join")))
            send(wz, {"type": "typing"})
            seen.append(recv_until(wa, of_type("typing")))
            send(wa, {"type": "message", "body": "hello", "nonce": "n-1"})
            seen.append(recv_until(wa, own_message("n-1")))
            send(wa, {"type": "message", "body": 42, "nonce": "n-2"})
            seen.append(recv_until(wa, of_type("error")))
            send(wa, {"type": "message", "body": "two", "nonce": "n-3"})
            recv_until(wa, own_message("n-3"))
            send(wa, {"type": "message", "body": "over the limit", "nonce": "n-4"})
            seen.append(recv_until(wa, of_type("error", code="rate_limited")))
        seen.append(recv_until(wa, of_type("presence", event="leave")))
        with httpx.Client(base_url=srv.url) as http:
            assert post(http, zed, room, "over REST").status_code == 201
        seen.append(recv_until(wa, of_type("message", user=zed.username)))
        # Attention: the message as a badge on `/ws/me`, a read marker, a new room.
        seen.append(recv_until(me, of_type("activity", room=room)))
        with httpx.Client(base_url=srv.url, headers=amy.headers) as http:
            last = seen[-1]["last_message_id"]
            assert http.put(f"/api/rooms/{room}/read", json={"up_to": last}).status_code == 204
            seen.append(recv_until(me, of_type("read", room=room)))
            assert http.post("/api/rooms", json={"name": f"{room}-2"}).status_code == 201
            seen.append(recv_until(me, of_type("room", room=f"{room}-2")))
        with srv.ws(path, zed) as wz:
            welcome(wz)
            send(wz, {"type": "delete", "id": 10**9})
            seen.append(recv_until(wz, of_type("error", code="not_found")))
        first = next(f["id"] for f in seen if f["type"] == "message" and f["nonce"] == "n-1")
        # The admin (whose rate is untouched) deletes amy's first message.
        with httpx.Client(base_url=srv.url, headers=srv.admin.headers) as http:
            r = http.delete(f"/api/rooms/{room}/messages/{first}")
            assert r.status_code == 204, r.text
        seen.append(recv_until(wa, of_type("update")))
    with srv.ws(f"{path}?since={first}", amy) as resumed:
        seen.append(welcome(resumed))
        assert seen[-1]["updates"][0]["deleted"] is True
    with srv.ws(f"{path}?since=0", amy) as resumed:
        seen.append(welcome(resumed))

    assert {frame["type"] for frame in seen} == set(SERVER_FRAMES)
    for frame in seen:
        conforms(frame)
    assert seen[-1]["history"][0]["nonce"] == "n-1"
    rate_limited = next(f for f in seen if f.get("code") == "rate_limited")
    assert rate_limited["nonce"] == "n-4" and rate_limited["retry_after"] > 0


MESSAGE = {
    "type": "message",
    "id": 1,
    "room": "r",
    "user": "u",
    "body": "b",
    "ts": "t",
    "nonce": None,
    "edited_at": None,
    "deleted": False,
    "reactions": {},
    "mentions": [],
}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "typing", "room": "r", "user": "u", "extra": 1},
        {"type": "typing", "room": "r"},
        {"type": "error", "code": "no_such_code", "detail": "x"},
        {**MESSAGE, "id": "1"},
        {"type": "update", "message": {k: v for k, v in MESSAGE.items() if k != "deleted"}},
        {
            "type": "welcome",
            "room": "r",
            "user": "u",
            "users": [],
            "history": [],
            "truncated": False,
        },
        {"type": "activity", "room": "r", "last_message_id": 1, "unread": 1},
        {"type": "read", "room": "r", "up_to": "1"},
        {"type": "room", "event": "renamed", "room": "r", "kind": "public", "topic": ""},
    ],
    ids=[
        "extra key",
        "missing key",
        "unknown error code",
        "id as text",
        "update missing a field",
        "history with type",
        "activity without mentions",
        "read up_to as text",
        "unknown room event",
    ],
)
def test_definitions_refuse_what_the_protocol_does_not_allow(frame: dict[str, Any]) -> None:
    """The definitions are exact, so the test above can fail."""
    with pytest.raises(ValidationError):
        conforms(frame)
