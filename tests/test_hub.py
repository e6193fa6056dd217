"""The hub's fan-out on a server whose sockets it cannot write to directly.

uvicorn's sans-I/O protocol lets the hub write each room's pre-encoded frame
straight to every transport; any other ASGI server gets a bounded queue and a
sending task per socket. The rest of the suite covers the first path.
"""

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.hub import wire_frame
from tests.conftest import Server, make_settings, of_type, recv_until, unique
from tests.ws_helpers import closed_with, welcome

# uvicorn's older WebSocket protocol, used here on purpose, warns that it is deprecated.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated"),
]


@pytest.fixture
def queued_server(tmp_path: Path) -> Iterator[Server]:
    # The queue must hold a whole commit's messages (up to 512), or every socket overflows.
    settings = make_settings(tmp_path, send_queue_max=4, rate_burst=100_000, rate_per_sec=100_000.0)
    srv = Server(settings, ws_protocol="websockets")
    srv.start()
    srv.admin = srv.register(unique("admin"))
    yield srv
    srv.stop()


def test_wire_frame_is_a_websocket_text_frame() -> None:
    """Frames carry FIN + text opcode and the payload length in RFC 6455's three sizes."""
    assert wire_frame(b"hi") == b"\x81\x02hi"
    assert wire_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert wire_frame(b"x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")


def test_queued_sockets_chat(queued_server: Server) -> None:
    """On the fallback path two users still see each other's messages and presence."""
    a, b = queued_server.register(), queued_server.register()
    room = queued_server.create_room(a)
    with queued_server.ws(f"/ws/rooms/{room}", a) as wa:
        welcome(wa)
        with queued_server.ws(f"/ws/rooms/{room}", b) as wb:
            welcome(wb)
            recv_until(wa, of_type("presence", event="join", user=b.username))
            wb.send(json.dumps({"type": "message", "body": "over the queue"}))
            got = recv_until(wa, of_type("message"))
            assert (got["user"], got["body"]) == (b.username, "over the queue")


def test_queued_slow_socket_is_dropped_1013(queued_server: Server) -> None:
    """On the fallback path a socket whose queue overflows is closed with 1013."""
    sender, slow = queued_server.register(), queued_server.register()
    room = queued_server.create_room(sender)
    http = queued_server.client(headers=sender.headers)
    ws_slow = queued_server.ws(f"/ws/rooms/{room}", slow, max_queue=1).__enter__()
    try:
        welcome(ws_slow)
        # The client stops reading: its kernel buffers fill, then its queue.
        body = {"body": "y" * 3900}
        for _ in range(2500):
            assert http.post(f"/api/rooms/{room}/messages", json=body).status_code == 201
            if ws_slow.protocol.close_rcvd is not None:
                break
        assert closed_with(ws_slow, timeout=30).code == 1013
    finally:
        with contextlib.suppress(Exception):
            ws_slow.close()
