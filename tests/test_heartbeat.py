"""Heartbeats: a peer that vanishes without closing is found out and leaves presence."""

import base64
import os
import socket
import time
from collections.abc import Callable

from tests.conftest import Server, of_type, recv_until
from tests.ws_helpers import welcome


def silent_client(srv: Server, path: str, token: str) -> socket.socket:
    """A client that completes the WebSocket handshake, then never reads or answers again."""
    sock = socket.create_connection(("127.0.0.1", srv.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def test_dead_peer_leaves_presence_within_ping_interval_plus_timeout(
    make_server: Callable[..., Server],
) -> None:
    """A socket that stops answering pings is dropped and leaves within interval + timeout."""
    interval, timeout = 1.0, 1.0
    srv = make_server(ws_ping_interval_secs=interval, ws_ping_timeout_secs=timeout)
    ghost, watcher = srv.register(), srv.register()
    room = srv.create_room(watcher)
    with srv.ws(f"/ws/rooms/{room}", watcher) as ws:
        welcome(ws)
        dead = silent_client(srv, f"/ws/rooms/{room}", ghost.token)
        try:
            recv_until(ws, of_type("presence", event="join", user=ghost.username))
            went_silent = time.monotonic()
            left = recv_until(
                ws, of_type("presence", event="leave", user=ghost.username), timeout=10
            )
            gone_after = time.monotonic() - went_silent
        finally:
            dead.close()
        assert left["users"] == [watcher.username]
        # The watcher itself answers pings, so it stays.
        assert gone_after <= interval + timeout + 1.5
        ws.send('{"type":"typing"}')
        assert ws.ping().wait(5)
