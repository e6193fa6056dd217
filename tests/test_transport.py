"""The direct path into uvicorn's transport: framing, the fallback, and letting go of sockets."""

import asyncio
import contextlib
import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from starlette.types import Message
from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol

from chat import hub, transport
from chat.closecodes import CloseCode
from chat.hub import CLOSE_DRAIN_SECS, Connection
from chat.transport import SERVER_SEND_KEY, DirectSink, direct_sink, wire_frame
from tests.conftest import Account, Server
from tests.ws_helpers import StalledClient, welcome

SANSIO_MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"


def test_wire_frame_is_a_websocket_text_frame() -> None:
    """Frames carry FIN + text opcode and the payload length in RFC 6455's three sizes."""
    assert wire_frame(b"hi") == b"\x81\x02hi"
    assert wire_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert wire_frame(b"x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")


async def never_receive() -> Message:
    raise AssertionError("nothing is received here")


async def never_send(message: Message) -> None:
    raise AssertionError(f"nothing is sent here, not {message}")


def socket_on(protocol: Any) -> WebSocket:
    """A WebSocket whose scope holds `protocol`'s send, as `chat.app.SocketRoutes` leaves it."""
    scope = {"type": "websocket", SERVER_SEND_KEY: protocol.send}
    return WebSocket(scope, never_receive, never_send)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.written))

    def abort(self) -> None:
        self.aborted = True


def sansio_protocol() -> WebSocketsSansIOProtocol:
    """uvicorn's sans-I/O protocol as an open socket leaves it, on a fake transport."""
    protocol = WebSocketsSansIOProtocol.__new__(WebSocketsSansIOProtocol)
    protocol.transport, protocol.close_sent = FakeTransport(), False
    return protocol


def test_direct_sink_only_on_uvicorns_sansio_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's sans-I/O protocol gets a sink; its other protocols, and a uvicorn without
    that module, get None: the queued fallback, not an ImportError."""
    sansio = socket_on(sansio_protocol())
    assert isinstance(direct_sink(sansio), DirectSink)
    assert direct_sink(socket_on(WSProtocol.__new__(WSProtocol))) is None

    monkeypatch.setitem(sys.modules, SANSIO_MODULE, None)  # Importing it raises ImportError.
    transport._sansio_protocol.cache_clear()
    try:
        assert direct_sink(sansio) is None
    finally:
        transport._sansio_protocol.cache_clear()


def test_sink_writes_nothing_after_the_close_frame_or_abort() -> None:
    """No frame may follow a close frame, and an aborted socket takes no more."""
    protocol = sansio_protocol()
    fake = protocol.transport
    assert isinstance(fake, FakeTransport)
    sink = direct_sink(socket_on(protocol))
    assert sink is not None
    assert sink.write(b"one") == sink.buffered_bytes() == 3
    protocol.close_sent = True
    assert sink.write(b"two") is None
    protocol.close_sent = False
    sink.abort()
    assert sink.write(b"three") is None
    assert fake.written == [b"one"]


class FakeSink(DirectSink):
    """A sink with `left` bytes buffered, which records being aborted."""

    def __init__(self, left: int) -> None:  # No protocol: nothing is written to it.
        self.left = left
        self.aborted = asyncio.Event()

    def buffered_bytes(self) -> int:
        return self.left

    def abort(self) -> None:
        self.aborted.set()


def test_close_frame_left_in_the_buffer_is_aborted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kicked socket whose buffer, close frame included, has not drained CLOSE_DRAIN_SECS
    after the close frame was written is aborted; one whose buffer drained is not."""
    monkeypatch.setattr(hub, "CLOSE_DRAIN_SECS", 0.05)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    drained, stuck = FakeSink(100), FakeSink(100)
    scope = {"type": "websocket"}
    sockets = [(WebSocket(scope, never_receive, send), sink) for sink in (drained, stuck)]
    monkeypatch.setattr(hub, "direct_sink", lambda ws: next(s for w, s in sockets if w is ws))

    async def kick_both() -> None:
        for websocket, _ in sockets:
            connection = Connection(websocket, "room", "user", "token", 4, 1024)
            connection.kick(CloseCode.FORBIDDEN, "removed")
            await connection.close()
        drained.left = 0
        await asyncio.wait_for(stuck.aborted.wait(), 5)

    asyncio.run(kick_both())
    assert [m["code"] for m in sent] == [CloseCode.FORBIDDEN, CloseCode.FORBIDDEN]
    # Its check was due first, so it has run.
    assert not drained.aborted.is_set()


# --- Letting go of dropped sockets ----------------------------------------------------------

BODY = "\N{GRINNING FACE}" * 4000  # 16 kB a frame: an unread socket's buffer fills quickly.
SEND_BUFFER_MAX_BYTES = 2 * 1024 * 1024
SLOW_SOCKETS = 4

FLOOD_SCRIPT = """
import sys

import httpx

url, token, room, body = sys.argv[1:]
with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=15) as http:
    while True:
        r = http.post(f"/api/rooms/{room}/messages", json={"body": body})
        if r.status_code != 201:
            sys.exit(r.text)
"""


@contextlib.contextmanager
def flood(srv: Server, account: Account, room: str, processes: int = 2) -> Iterator[None]:
    """Keep posting large messages to `room` while inside, from processes of their own, so
    that the clients' memory stays out of this process's RSS."""
    command = [sys.executable, "-c", FLOOD_SCRIPT, srv.url, account.token, room, BODY]
    posters = [subprocess.Popen(command) for _ in range(processes)]
    try:
        yield
    finally:
        for poster in posters:
            poster.terminate()
        for poster in posters:
            poster.wait(15)
    assert all(poster.returncode == -signal.SIGTERM for poster in posters), "a poster failed"


def rss_bytes() -> int:
    """This process's resident memory, after the C allocator hands back what it can: memory
    freed but kept for reuse is not what is measured here."""
    with contextlib.suppress(OSError, AttributeError):  # Only glibc has malloc_trim.
        ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def open_websockets(srv: Server) -> list[WebSocketsSansIOProtocol]:
    """The WebSocket connections uvicorn holds, closing ones included."""
    assert srv.server is not None
    # Copied in one step: the server's thread adds and removes connections.
    connections = tuple(srv.server.server_state.connections)
    return [c for c in connections if isinstance(c, WebSocketsSansIOProtocol)]


def room_connection(srv: Server, room: str) -> Connection:
    """The hub's connection in `room`, once it has joined."""
    assert srv.server is not None
    sockets = srv.server.config.app.state.services.hub  # type: ignore[union-attr]
    found: list[Connection] = []

    def joined() -> bool:
        found[:] = [c for c in list(sockets.all()) if c.room == room]
        return bool(found)

    wait_until(joined, 10, "the socket joined")
    return found[0]


def fill_history(srv: Server, account: Account, room: str) -> None:
    """Enough large messages in `room` that the welcome of a socket joining with `since=0`
    (up to 500 messages) stays partly in uvicorn's buffer, over its high-water mark, when the
    client does not read: more than the kernel takes into a socket's send buffer (4 MiB at
    most by default)."""

    def post(_: int) -> None:
        with httpx.Client(base_url=srv.url, headers=account.headers, timeout=15) as http:
            for _ in range(100):
                r = http.post(f"/api/rooms/{room}/messages", json={"body": BODY})
                assert r.status_code == 201, r.text

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, range(4)))


@pytest.fixture
def stalled_clients() -> Iterator[list[StalledClient]]:
    """Clients that keep their connections open, unread, until the test ends."""
    clients: list[StalledClient] = []
    yield clients
    for client in clients:
        client.close()


# Alone: its posting processes take both CPUs, and the socket must be let go of within 1 s.
@pytest.mark.exclusive
def test_dropped_slow_socket_lets_go_of_connection_and_memory(
    make_server: Callable[..., Server], stalled_clients: list[StalledClient]
) -> None:
    """A socket dropped with 1013 for falling behind is let go of at once, with its buffered
    bytes, although its client keeps the TCP connection open: uvicorn's connection count and
    the process's RSS fall back, and the user can open sockets up to the cap again."""
    srv = make_server(
        rate_burst=10**6,
        rate_per_sec=10**6,
        send_buffer_max_bytes=SEND_BUFFER_MAX_BYTES,
        max_connections_per_user=SLOW_SOCKETS,
    )
    slow, poster = srv.register(), srv.register()

    def drop_one() -> None:
        # A room of its own: a short welcome, and frames that no other socket holds.
        room = srv.create_room(poster)
        before = len(open_websockets(srv))
        stalled_clients.append(StalledClient(srv, f"/ws/rooms/{room}", slow))
        connection = room_connection(srv, room)
        assert len(open_websockets(srv)) == before + 1
        with flood(srv, poster, room):
            wait_until(lambda: connection.close_code is not None, 30, "slow socket dropped")
        assert connection.close_code == CloseCode.TOO_SLOW
        wait_until(lambda: len(open_websockets(srv)) == before, 1, "connection let go of")

    drop_one()  # Warms up the allocator and the server's caches.
    start = rss_bytes()
    for _ in range(SLOW_SOCKETS):
        drop_one()
    grown = rss_bytes() - start
    # Each socket held at least SEND_BUFFER_MAX_BYTES when it was dropped.
    assert grown < SLOW_SOCKETS * SEND_BUFFER_MAX_BYTES / 2, f"grew {grown / 2**20:.1f} MiB"

    room = srv.create_room(poster)
    with contextlib.ExitStack() as sockets:
        for _ in range(SLOW_SOCKETS):
            welcome(sockets.enter_context(srv.ws(f"/ws/rooms/{room}", slow)))


def test_kicked_socket_that_does_not_drain_is_aborted(
    make_server: Callable[..., Server], stalled_clients: list[StalledClient]
) -> None:
    """A socket closed for another reason (here its token is signed out) whose client does
    not read is aborted when its close frame has not gone out within CLOSE_DRAIN_SECS."""
    srv = make_server(rate_burst=10**6, rate_per_sec=10**6, send_buffer_max_bytes=2**30)
    user = srv.register()
    room = srv.create_room(user)
    fill_history(srv, user, room)
    stalled_clients.append(StalledClient(srv, f"/ws/rooms/{room}?since=0", user))
    connection = room_connection(srv, room)
    [protocol] = open_websockets(srv)
    wait_until(lambda: not protocol.writable.is_set(), 5, "the welcome backed up")
    with httpx.Client(base_url=srv.url, headers=user.headers, timeout=15) as http:
        assert http.post("/api/auth/logout").status_code == 204
    wait_until(lambda: connection.close_code is not None, 10, "the socket kicked")
    assert connection.close_code == CloseCode.UNAUTHENTICATED
    wait_until(lambda: not open_websockets(srv), 2 * CLOSE_DRAIN_SECS + 1, "socket aborted")


def test_socket_closed_by_keepalive_that_does_not_drain_is_aborted(
    make_server: Callable[..., Server], stalled_clients: list[StalledClient]
) -> None:
    """A socket that uvicorn closes for missing pongs, while bytes for it are still buffered,
    leaves its room at the next frame for it, and is aborted if it still does not drain."""
    srv = make_server(
        rate_burst=10**6,
        rate_per_sec=10**6,
        send_buffer_max_bytes=2**30,
        ws_ping_interval_secs=1.0,
        ws_ping_timeout_secs=1.0,
    )
    user, other = srv.register(), srv.register()
    room = srv.create_room(user)
    fill_history(srv, user, room)
    stalled_clients.append(StalledClient(srv, f"/ws/rooms/{room}?since=0", user))
    connection = room_connection(srv, room)
    [protocol] = open_websockets(srv)
    wait_until(lambda: protocol.close_sent, 5, "uvicorn closed the socket for missing pongs")
    assert protocol.transport.get_write_buffer_size(), "the welcome did not back up"
    assert connection.close_code is None  # Nothing told the handler.
    with httpx.Client(base_url=srv.url, headers=other.headers, timeout=15) as http:
        r = http.post(f"/api/rooms/{room}/messages", json={"body": "to a closed socket"})
        assert r.status_code == 201, r.text
    wait_until(lambda: connection.close_code is not None, 5, "the socket kicked")
    assert connection.close_code == CloseCode.GOING_AWAY
    wait_until(lambda: not open_websockets(srv), 2 * CLOSE_DRAIN_SECS + 1, "socket aborted")
