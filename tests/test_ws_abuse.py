"""Hostile WebSocket clients: floods of pings and frames, reconnect loops, odd query strings."""

import base64
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from chat.closecodes import CloseCode
from tests.conftest import (
    PASSWORD,
    REDIS_URL,
    Account,
    Server,
    need,
    recv_until,
    redis_available,
    unique,
)
from tests.test_lifecycle import Process
from tests.test_transport import open_websockets, rss_bytes, wait_until
from tests.ws_helpers import closed_with, own_message, send, welcome

# A flood's effect on the server's memory must stay under this.
RSS_GROWTH_MAX_BYTES = 64 * 2**20
# The most a flood sends before the test gives up on the server stopping it.
FLOOD_MAX_BYTES = 48 * 2**20
FLOOD_MAX_SECS = 10.0


def masked_ping(payload: bytes) -> bytes:
    """A client's ping frame (RFC 6455, 5.5.2), masked as clients must."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x89, 0x80 | len(payload))) + mask + masked


# A megabyte of pings with the largest payload allowed, each answered by a 127-byte pong.
PINGS = masked_ping(b"p" * 125) * (2**20 // 131)


class PingFlooder:
    """A client that completes a handshake, then sends pings as fast as it can and never
    reads a byte, with a tiny receive buffer so that the server's answers back up."""

    def __init__(self, server: Server, path: str, token: str | None = None) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
            ).encode()
        )
        self.sent = 0
        self.cut_off = False

    def flood(self) -> None:
        """Send pings until the server cuts the connection, FLOOD_MAX_BYTES are sent or
        FLOOD_MAX_SECS have passed; the connection stays open on this side."""
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + FLOOD_MAX_SECS
        while self.sent < FLOOD_MAX_BYTES and time.monotonic() < deadline:
            try:
                self.sent += self.sock.send(PINGS)
            except TimeoutError:
                continue  # The server stopped reading: try on until the deadline.
            except OSError:
                self.cut_off = True
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def flooders() -> Iterator[list[PingFlooder]]:
    clients: list[PingFlooder] = []
    yield clients
    for client in clients:
        client.close()


def assert_flood_bounded(srv: Server, start_flood: Callable[[], PingFlooder]) -> None:
    """Two clients flood pings without reading: the server lets go of both connections
    although the clients keep them open, and its memory barely grows."""
    before = len(open_websockets(srv))
    start = rss_bytes()
    clients = [start_flood() for _ in range(2)]
    threads = [threading.Thread(target=client.flood) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grown = rss_bytes() - start
    wait_until(lambda: len(open_websockets(srv)) <= before, 5, "flooding sockets let go of")
    assert grown < RSS_GROWTH_MAX_BYTES, f"grew {grown / 2**20:.1f} MiB"
    assert all(client.cut_off for client in clients), "a flood went on"


@pytest.mark.parametrize("who", ["no account", "member", "admin view"])
def test_ping_flood_without_reading_is_cut_off(
    server: Server, flooders: list[PingFlooder], who: str
) -> None:
    """Pings sent without reading the pongs, with or without a token, in a room or on
    /ws/admin: the socket is closed, then let go of, and memory stays bounded."""
    account = server.register()
    assert server.admin is not None
    path, token = {
        "no account": ("/ws/rooms/general", None),
        "member": ("/ws/rooms/general", account.token),
        "admin view": ("/ws/admin", server.admin.token),
    }[who]

    def start() -> PingFlooder:
        flooders.append(PingFlooder(server, path, token))
        return flooders[-1]

    assert_flood_bounded(server, start)


def test_unread_pongs_are_bounded_by_the_send_buffer(
    make_server: Callable[..., Server], flooders: list[PingFlooder]
) -> None:
    """With no frame limit to stop the flood, pongs are still bounded: a socket whose
    unsent bytes pass CHAT_SEND_BUFFER_MAX_BYTES is aborted instead of answered."""
    srv = make_server(
        ws_frames_burst=10**9, ws_frames_per_sec=10**9, send_buffer_max_bytes=256 * 1024
    )
    account = srv.register()

    def start() -> PingFlooder:
        flooders.append(PingFlooder(srv, "/ws/rooms/general", account.token))
        return flooders[-1]

    assert_flood_bounded(srv, start)


def test_frame_flood_closes_4429_and_spares_the_others(make_server: Callable[..., Server]) -> None:
    """Typing frames or pings past the per-socket frame limit (by default) close that socket
    with 4429; another user's messages are acknowledged as before."""
    srv = make_server()
    flooder, other = srv.register(), srv.register()
    room = srv.create_room(other)
    with srv.ws(f"/ws/rooms/{room}", other) as calm:
        welcome(calm)
        for kind in ("typing", "ping"):
            with srv.ws(f"/ws/rooms/{room}", flooder) as ws:
                welcome(ws)
                with contextlib.suppress(ConnectionClosed):
                    for _ in range(5000):
                        if kind == "typing":
                            send(ws, {"type": "typing"})
                        else:
                            ws.ping()
                assert closed_with(ws).code == CloseCode.TOO_MANY, kind
            nonce = unique("n")
            send(calm, {"type": "message", "body": "still here", "nonce": nonce})
            recv_until(calm, own_message(nonce))


@pytest.mark.parametrize("since", ["%C2%B2", "%EF%BC%91", "1e3", "-1", "9" * 19])
def test_since_that_is_not_ascii_digits_closes_4400(server: Server, since: str) -> None:
    """`since` is ASCII digits naming a message id; anything else ("²", a full-width one)
    is closed with 4400, not dropped with an error in the server."""
    account = server.register()
    with server.ws(f"/ws/rooms/general?since={since}", account) as ws:
        assert closed_with(ws).code == CloseCode.BAD_REQUEST


def test_percent_encoded_token_name_is_never_logged(tmp_path: Path) -> None:
    """`?%74oken=` is read as `?token=`, so it is redacted from the logs alike."""
    server = Process(tmp_path)
    server.start()
    try:
        http = httpx.Client(base_url=server.url)
        name = unique()
        http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
        token = http.post("/api/auth/token", data={"username": name, "password": PASSWORD}).json()[
            "access_token"
        ]
        for query in (f"%74oken={token}", f"since=0&t%6Fk%65n={token}", f"tok%65n={token}"):
            url = f"ws://127.0.0.1:{server.port}/ws/rooms/general?{query}"
            with connect(url) as ws:
                ws.recv(timeout=5)
        http.get(f"/api/rooms?%74oken={token}")
    finally:
        assert server.stop()
    logged = server.log_path.read_text()
    assert "/ws/rooms/general?%74oken=[redacted]" in logged  # The line is there, redacted.
    assert token not in logged and token.split(".")[2] not in logged


def opened(srv: Server, account: Account) -> int | None:
    """Open a socket resuming from the start, then close it; None if it got its welcome,
    else the code it was closed with."""
    with srv.ws("/ws/rooms/general?since=0", account) as ws:
        try:
            welcome(ws)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else -1
    return None


def test_reconnect_loop_is_refused_4429(make_server: Callable[..., Server]) -> None:
    """Handshakes per user past CHAT_WS_HANDSHAKES_BURST are closed with 4429 before any
    history is sent; another user connects as before."""
    srv = make_server(ws_handshakes_burst=3, ws_handshakes_per_sec=0.01)
    looper, other = srv.register(), srv.register()
    assert [opened(srv, looper) for _ in range(4)] == [None, None, None, CloseCode.TOO_MANY]
    assert opened(srv, other) is None


def test_handshake_limit_is_shared_through_redis(make_server: Callable[..., Server]) -> None:
    """With Redis, a user's handshakes count on every process: the second gains nothing."""
    need(redis_available(), "Redis at 127.0.0.1:6379")
    shared = {
        "broker_url": REDIS_URL,
        "redis_namespace": unique("ns"),
        "ws_handshakes_burst": 3,
        "ws_handshakes_per_sec": 0.01,
    }
    one, two = make_server(**shared), make_server(**shared)
    name = unique()
    on_one, on_two = one.register(name), two.register(name)
    codes = [opened(one, on_one), opened(two, on_two), opened(one, on_one), opened(two, on_two)]
    assert codes == [None, None, None, CloseCode.TOO_MANY]
