"""The hub's fan-out on servers whose sockets it cannot write to directly.

uvicorn's sans-I/O protocol lets the hub write each room's pre-encoded frame straight
to every transport (`chat.transport`); on any other server, or a uvicorn without that
protocol, each socket gets a bounded queue and a sending task. These tests run that
fallback on uvicorn's wsproto protocol, and on its sans-I/O one with the adapter
finding no such module. The rest of the suite covers the direct path.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat import transport
from chat.closecodes import CloseCode
from chat.hub import Hub
from tests.conftest import Server, make_settings, of_type, recv_until
from tests.ws_helpers import StalledClient, post, post_until_dropped, welcome


@pytest.fixture(params=["wsproto", "no sans-I/O module"])
def queued_server(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    if request.param == "no sans-I/O module":
        monkeypatch.setattr(transport, "_sansio_protocol", lambda: None)
    # A small queue, which a socket that does not read overflows soon. Messages are posted
    # one at a time: a commit of more than 4 would overflow every socket's queue.
    settings = make_settings(tmp_path, send_queue_max=4, rate_burst=100_000, rate_per_sec=100_000.0)
    srv = Server(settings, ws_protocol="wsproto" if request.param == "wsproto" else None)
    srv.start()
    srv.admin = srv.register()
    yield srv
    srv.stop()


def hub_of(srv: Server) -> Hub:
    assert srv.server is not None
    hub: Hub = srv.server.config.app.state.services.hub  # type: ignore[union-attr]
    return hub


def test_queued_sockets_chat_in_order(queued_server: Server) -> None:
    """On the fallback path two users see each other's presence and every message, in order."""
    a, b = queued_server.register(), queued_server.register()
    room = queued_server.create_room(a)
    with queued_server.ws(f"/ws/rooms/{room}", a) as wa:
        welcome(wa)
        with queued_server.ws(f"/ws/rooms/{room}", b) as wb:
            welcome(wb)
            recv_until(wa, of_type("presence", event="join", user=b.username))
            assert all(c.queue is not None for c in hub_of(queued_server).all())
            wb.send(json.dumps({"type": "message", "body": "over the queue"}))
            got = recv_until(wa, of_type("message"))
            assert (got["user"], got["body"]) == (b.username, "over the queue")
        with httpx.Client(base_url=queued_server.url, timeout=15) as http:
            posted = [post(http, b, room, f"m{i}").json()["id"] for i in range(20)]
        assert [recv_until(wa, of_type("message"))["id"] for _ in posted] == posted


def test_queued_slow_socket_is_dropped_1013(queued_server: Server) -> None:
    """On the fallback path a socket whose queue overflows is closed with 1013, after a
    gap-free prefix of the room's messages, while a reading socket gets them all in order."""
    reader, slow, poster = (queued_server.register() for _ in range(3))
    room = queued_server.create_room(reader)
    body = "\N{GRINNING FACE}" * 4000  # 16 kB a frame fills the socket buffers quickly
    with (
        queued_server.ws(f"/ws/rooms/{room}", reader) as wr,
        httpx.Client(base_url=queued_server.url, timeout=15) as http,
    ):
        welcome(wr)
        stalled = StalledClient(queued_server, f"/ws/rooms/{room}", slow)
        try:
            recv_until(wr, of_type("presence", event="join", user=slow.username))
            posted, frames = post_until_dropped(http, poster, room, body, wr, slow.username)
            received = [f["id"] for f in frames if f["type"] == "message"]
            kept, code = stalled.read_until_closed()
        finally:
            stalled.close()
    assert code == CloseCode.TOO_SLOW
    assert received == posted
    assert kept[0]["type"] == "welcome"
    got = [f["id"] for f in kept if f["type"] == "message"]
    assert got == posted[: len(got)], "the slow client's messages have a gap or are out of order"
