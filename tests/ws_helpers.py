"""Helpers for the WebSocket and admin tests: frames, close codes, REST seeding, forged tokens."""

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from jose import jwt
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Opcode
from websockets.frames import Frame as WireFrame
from websockets.sync.client import ClientConnection
from websockets.uri import parse_uri

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


def closed_with(ws: ClientConnection, timeout: float = 5) -> Close:
    """The close frame the server sends, skipping any frames before it."""
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            ws.recv(timeout=remaining)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "connection dropped without a close frame"
        return closed.rcvd
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


def seed(server: Server, account: Account, room: str, count: int, workers: int = 8) -> list[Frame]:
    """Post `count` messages over REST from a few threads (the server's rate limit must
    allow it), so that the server can store them in grouped commits; sorted by id."""

    def post_some(start: int) -> list[Frame]:
        stored = []
        with httpx.Client(base_url=server.url, timeout=15) as http:
            for i in range(start, count, workers):
                r = post(http, account, room, f"seed {i}")
                assert r.status_code == 201, r.text
                stored.append(r.json())
        return stored

    with ThreadPoolExecutor(workers) as pool:
        batches = list(pool.map(post_some, range(workers)))
    return sorted((m for batch in batches for m in batch), key=lambda m: m["id"])


@contextlib.contextmanager
def busy(server: Server, account: Account, room: str, threads: int = 1) -> Iterator[list[int]]:
    """Keep posting to `room` from `threads` threads while inside; yields the list of ids
    posted, complete once the block is left."""
    stop = threading.Event()
    posted: list[int] = []
    failures: list[str] = []

    def keep_posting() -> None:
        with httpx.Client(base_url=server.url, timeout=15) as http:
            while not stop.is_set():
                r = post(http, account, room, "busy")
                if r.status_code != 201:
                    failures.append(r.text)
                    return
                posted.append(r.json()["id"])

    posters = [threading.Thread(target=keep_posting, daemon=True) for _ in range(threads)]
    for poster in posters:
        poster.start()
    try:
        yield posted
    finally:
        stop.set()
        for poster in posters:
            poster.join(15)
    assert not failures, failures
    assert not any(poster.is_alive() for poster in posters)
    posted.sort()


def history(server: Server, account: Account, room: str, **params: Any) -> list[Frame]:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.get(f"/api/rooms/{room}/messages", params=params, headers=account.headers)
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def token_for(server: Server, account: Account, ttl: timedelta, key: str | None = None) -> str:
    """A token for `account` with its own lifetime, signed with the server's key or `key`."""
    return create_access_token(
        account.id, account.token_key, key or server.settings.signing_key(), ttl, account.sid
    )


def signed(key: str, **claims: Any) -> str:
    """An HS256 token with exactly these claims."""
    return jwt.encode(claims, key, algorithm="HS256")


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


def post_until_dropped(
    http: httpx.Client,
    poster: Account,
    room: str,
    body: str,
    watcher: ClientConnection,
    dropped_user: str,
) -> tuple[list[int], list[Frame]]:
    """Post `body` to `room` until `watcher` sees `dropped_user` leave (dropped for being too
    slow); the ids posted, and every frame `watcher` received meanwhile."""
    posted: list[int] = []
    received: list[Frame] = []
    while True:
        assert len(posted) < 2000, f"{dropped_user} was never dropped"
        r = post(http, poster, room, body)
        assert r.status_code == 201, r.text
        posted.append(r.json()["id"])
        frames = frames_until(watcher, lambda f: f.get("id") == posted[-1])
        received += frames
        left = {"type": "presence", "event": "leave", "user": dropped_user}
        if any(all(f.get(k) == v for k, v in left.items()) for f in frames):
            return posted, received


class StalledClient:
    """A WebSocket client that reads nothing from its socket until asked to, with a tiny
    receive buffer, so that the server's sends back up quickly."""

    def __init__(self, server: Server, path: str, account: Account) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", server.port))
        self.protocol = ClientProtocol(parse_uri(f"{server.ws_url}{path}"), max_size=None)
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Bearer {account.token}"
        self.protocol.send_request(request)
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def read_until_closed(self, timeout: float = 10) -> tuple[list[Frame], int | None]:
        """Read everything now: the JSON frames received, and the close code sent, if any."""
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            for event in self.protocol.events_received():
                if isinstance(event, WireFrame) and event.opcode is Opcode.TEXT:
                    frames.append(json.loads(event.data))
                elif isinstance(event, WireFrame) and event.opcode is Opcode.CLOSE:
                    assert self.protocol.close_rcvd is not None
                    return frames, self.protocol.close_rcvd.code
            if not data:
                break
        return frames, None

    def close(self) -> None:
        self.sock.close()


def raw_text_frame(port: int, path: str, token: str, payload: bytes) -> int:
    """Send one text frame of `payload`, whatever its bytes, from a hand-made client on
    a plain socket (a WebSocket library would refuse to); the close code it gets."""
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), 10)) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 101"), "no upgrade"
        while reader.readline() not in (b"\r\n", b""):
            pass
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)  # FIN, text, masked
        while True:
            head = reader.read(2)
            assert len(head) == 2, "the server hung up without a close frame"
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", reader.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", reader.read(8))[0]
            data = reader.read(length)
            if head[0] & 0x0F == 0x8:  # close
                return int(struct.unpack("!H", data[:2])[0])
