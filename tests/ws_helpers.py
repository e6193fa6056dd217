"""Helpers for the WebSocket and admin tests: frames, close codes, REST seeding, forged tokens."""

import base64
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from chat.security import create_access_token
from tests.conftest import Account, Server, recv

Frame = dict[str, Any]


def send(ws: ClientConnection, frame: Any) -> None:
    ws.send(json.dumps(frame))


def welcome(ws: ClientConnection, timeout: float = 5) -> Frame:
    """The first frame, which must be the welcome."""
    frame = recv(ws, timeout)
    assert frame["type"] == "welcome", frame
    return frame


def close_code(ws: ClientConnection, timeout: float = 5) -> int:
    """The code of the close frame the server sends, skipping any frames before it."""
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            ws.recv(timeout=remaining)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "connection dropped without a close frame"
        return closed.rcvd.code
    raise AssertionError("the server did not close the connection")


def frames_until(
    ws: ClientConnection, predicate: Callable[[Frame], bool], timeout: float = 5
) -> list[Frame]:
    """Every frame received up to and including the first one matching `predicate`."""
    deadline = time.monotonic() + timeout
    frames: list[Frame] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no matching frame; got {frames}")
        frames.append(recv(ws, remaining))
        if predicate(frames[-1]):
            return frames


def own_message(nonce: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "message" and f.get("nonce") == nonce


def post(
    http: httpx.Client, account: Account, room: str, body: str, nonce: str | None = None
) -> httpx.Response:
    payload: dict[str, str] = {"body": body}
    if nonce is not None:
        payload["nonce"] = nonce
    return http.post(f"/api/rooms/{room}/messages", json=payload, headers=account.headers)


def seed(server: Server, account: Account, room: str, count: int) -> list[Frame]:
    """Post `count` messages over REST (the server's rate limit must allow it); oldest first."""
    stored = []
    with httpx.Client(base_url=server.url, timeout=15) as http:
        for i in range(count):
            r = post(http, account, room, f"seed {i}")
            assert r.status_code == 201, r.text
            stored.append(r.json())
    return stored


def history(server: Server, account: Account, room: str, **params: Any) -> list[Frame]:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.get(f"/api/rooms/{room}/messages", params=params, headers=account.headers)
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def token_for(server: Server, account: Account, ttl: timedelta, key: str | None = None) -> str:
    """A token for `account` with its own lifetime, signed with the server's key or `key`."""
    return create_access_token(account.id, key or server.settings.signing_key(), ttl)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(user_id: int) -> str:
    """An `alg: none` token that would name `user_id` if the server trusted it."""
    now = int(time.time())
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": str(user_id), "iat": now, "exp": now + 600}).encode())
    return f"{header}.{claims}."


def with_claims(token: str, **claims: Any) -> str:
    """`token` with some claims changed and its original signature kept."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded.update(claims)
    return f"{header}.{b64url(json.dumps(decoded).encode())}.{signature}"


def with_bad_signature(token: str) -> str:
    """`token` with one character in the middle of its signature changed."""
    header, payload, signature = token.split(".")
    i = len(signature) // 2
    flipped = "A" if signature[i] != "A" else "B"
    return f"{header}.{payload}.{signature[:i]}{flipped}{signature[i + 1 :]}"
