"""HTTP limits of `chat serve` itself: head size and lines, request deadlines, idle
connections, the connection limit, the open files limit, and the log of limits hit."""

import logging
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import Server, need

HEAD = b"GET /healthz HTTP/1.1\r\nHost: chat\r\n"
MiB = 1024 * 1024


def connect(srv: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection; fails if it does not
    close within `timeout`."""
    sock.settimeout(timeout)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            pytest.fail(f"connection still open after {timeout} s; received {received[:80]!r}")
        if not chunk:
            return received
        received += chunk


def send_until_refused(sock: socket.socket, data: bytes, total: int) -> int:
    """Sends `data` repeatedly, `total` bytes at most; the bytes sent before the server
    stopped reading."""
    sent = 0
    try:
        while sent < total:
            sock.sendall(data)
            sent += len(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def rss_bytes() -> int:
    """This process's resident memory: the test servers run in threads of it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def limit_log() -> Iterator[list[str]]:
    """The lines logged about limits; entered after the server started, whose logging
    configuration drops the handlers of the loggers it configures."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("chat.http_limits")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def test_oversized_header_block_gets_431_and_memory_stays_bounded(
    make_server: Callable[..., Server],
) -> None:
    """Header lines without end: 431 once the head passes CHAT_HTTP_MAX_HEADER_BYTES, the
    connection is closed, and the server holds none of it (of 64 MiB sent it kept every
    line without the limit, +67 MiB; with it, under 1 MiB)."""
    srv = make_server()
    line = b"X-Fill: " + b"a" * 4086 + b"\r\n"
    block = line * 256  # 1 MiB of 4 KiB header lines
    before = rss_bytes()
    with connect(srv) as sock:
        sock.sendall(HEAD)
        send_until_refused(sock, block, 64 * MiB)
        time.sleep(1)
        grown = rss_bytes() - before
        assert grown < 16 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b"connection: close" in answer.lower()
    assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200


def test_one_huge_header_gets_431(server: Server) -> None:
    """A single header line over the limit is refused as well (the parser would buffer it)."""
    with connect(server) as sock:
        sock.sendall(HEAD + b"X-Big: " + b"b" * (80 * 1024))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]


def test_oversized_pipelined_head_leaves_the_answer_before_it_whole(server: Server) -> None:
    """A head without end pipelined behind a good request: the server stops reading it,
    the good one's answer arrives whole, then the connection is closed (with 431 after
    it, if that answer was done)."""
    with connect(server) as sock:
        sock.sendall(HEAD + b"\r\n" + HEAD)
        sent = send_until_refused(sock, (b"X-Fill: " + b"a" * 4086 + b"\r\n") * 256, 32 * MiB)
        answer = read_until_closed(sock)
    assert sent < 16 * MiB, f"the server read {sent / MiB:.0f} MiB of one request head"
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:80]
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    after = rest[length:]
    assert after == b"" or after.startswith(b"HTTP/1.1 431 "), after[:80]


def test_too_many_headers_get_431(server: Server) -> None:
    """Over CHAT_HTTP_MAX_HEADERS header lines: 431 and closed; 90 lines are served."""
    with connect(server) as sock:
        sock.sendall(HEAD + b"".join(b"X-H%d: 1\r\n" % i for i in range(90)) + b"\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    with connect(server) as sock:
        sock.sendall(HEAD + b"".join(b"X-H%d: 1\r\n" % i for i in range(150)) + b"\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]


def test_request_head_deadline(make_server: Callable[..., Server]) -> None:
    """A head not complete within CHAT_HTTP_HEAD_TIMEOUT_SECS gets 408 and is closed,
    however slowly its bytes keep coming; so is an unfinished WebSocket handshake."""
    srv = make_server(http_head_timeout_secs=1.0)
    with connect(srv) as half, connect(srv) as drip, connect(srv) as handshake:
        started = time.monotonic()
        half.sendall(HEAD)
        handshake.sendall(
            b"GET /ws/rooms/general HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
        )
        drip.sendall(b"GET /healthz HTTP/1.1\r\n")
        drip.settimeout(0.2)
        dripped = b""
        while time.monotonic() - started < 10:
            try:
                drip.sendall(b"X-Slow: 1\r\n")
                dripped = drip.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not dripped or dripped.startswith(b"HTTP/"):
                break
        assert dripped.startswith(b"HTTP/1.1 408 "), dripped[:80]
        assert time.monotonic() - started < 9
        assert read_until_closed(half).startswith(b"HTTP/1.1 408 ")
        assert read_until_closed(handshake).startswith(b"HTTP/1.1 408 ")


def test_idle_connection_is_closed(make_server: Callable[..., Server]) -> None:
    """A connection that never sends a byte is closed after the head deadline; a request
    sent in time on another connection is served."""
    srv = make_server(http_head_timeout_secs=1.0)
    with connect(srv) as idle, connect(srv) as prompt:
        prompt.sendall(HEAD + b"\r\n")
        prompt.settimeout(10)
        assert prompt.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert read_until_closed(idle, timeout=8) == b""


def test_request_body_deadline(make_server: Callable[..., Server]) -> None:
    """A body not complete within CHAT_HTTP_BODY_TIMEOUT_SECS gets 408 and is closed."""
    srv = make_server(http_body_timeout_secs=1.0)
    with connect(srv) as sock:
        sock.sendall(
            b"POST /api/auth/token HTTP/1.1\r\nHost: chat\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            b"username=a"
        )
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]


def test_connection_limit_gives_503_then_recovers(make_server: Callable[..., Server]) -> None:
    """Beyond CHAT_MAX_CONNECTIONS open connections a new one gets 503 at once; once they
    are gone, the server answers again."""
    srv = make_server(max_connections=20)
    assert srv.server is not None
    held = [connect(srv) for _ in range(20)]
    try:
        deadline = time.monotonic() + 10
        while len(srv.server.server_state.connections) < 20:
            assert time.monotonic() < deadline, "connections not accepted"
            time.sleep(0.05)
        with connect(srv) as extra:
            extra.sendall(HEAD + b"\r\n")
            answer = read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        assert b"retry-after: 1" in answer.lower()
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:
        status = httpx.get(f"{srv.url}/healthz", timeout=10).status_code
        if status == 200:
            break
        assert time.monotonic() < deadline, f"/healthz still {status}"
        time.sleep(0.1)


def test_limit_hits_are_logged_at_most_once_per_interval(
    make_server: Callable[..., Server],
) -> None:
    """A limit hit is logged with its kind; a flood of hits gives one line per interval."""
    srv = make_server()
    with limit_log() as lines:
        for _ in range(3):
            with connect(srv) as sock:
                sock.sendall(HEAD + b"".join(b"X-H%d: 1\r\n" % i for i in range(150)) + b"\r\n")
                assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
    hits = [line for line in lines if "too many request headers" in line]
    assert len(hits) == 1, lines
    assert "HTTP limit hit" in hits[0] and "127.0.0.1" in hits[0]


RAISE_LIMIT = """
import resource, sys
from chat.http_limits import raise_open_files_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
now = raise_open_files_limit(int(sys.argv[1]))
print(now, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


def test_open_files_limit_is_raised_to_the_hard_limit() -> None:
    """At start-up the soft open files limit rises to the hard one; a connection limit
    that does not fit below it is warned about."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need(hard == resource.RLIM_INFINITY or hard > 256, "a hard open files limit above 256")
    done = subprocess.run(
        [sys.executable, "-c", RAISE_LIMIT, "100"], capture_output=True, text=True, check=True
    )
    returned, soft, hard_now = (int(v) for v in done.stdout.split())
    assert soft == returned > 256
    assert hard_now == resource.RLIM_INFINITY or soft == hard_now
    assert "CHAT_MAX_CONNECTIONS" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-c", RAISE_LIMIT, str(soft)], capture_output=True, text=True, check=True
    )
    assert f"CHAT_MAX_CONNECTIONS={soft} leaves too few" in done.stderr
    assert f"connections are limited to {soft - 64}" in done.stderr


def test_connection_limit_fits_the_open_files_limit() -> None:
    """CHAT_MAX_CONNECTIONS above what the open files limit holds is lowered to fit."""
    from chat.http_limits import RESERVED_FILES, connections_allowed

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connections_allowed(10) == 10
    if soft != resource.RLIM_INFINITY:
        assert connections_allowed(soft * 2) == soft - RESERVED_FILES


def test_oversized_body_gets_413_before_it_is_read(server: Server) -> None:
    """A body announced over `CHAT_HTTP_MAX_BODY_BYTES` is refused with 413 at once: the
    server reads none of it, so a megabyte-long sign-in costs it nothing (positive control:
    the same request with a small body gets its ordinary answer)."""
    form = b"username=nobody&password=wrong-password"
    small = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    small.sendall(
        b"POST /api/auth/token HTTP/1.1\r\nHost: chat\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(form), form)
    )
    assert read_until_closed(small).startswith(b"HTTP/1.1 401")

    sock = connect(server)
    sock.sendall(
        b"POST /api/auth/token HTTP/1.1\r\nHost: chat\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\nusername=" % (100 * MiB)
    )
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]


def test_oversized_chunked_body_gets_413(server: Server) -> None:
    """A chunked body, which announces no length, is cut off with 413 once it passes the
    limit, while the client is still sending it."""
    sock = connect(server)
    sock.sendall(
        b"POST /api/auth/token HTTP/1.1\r\nHost: chat\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 16384
    send_until_refused(sock, b"%x\r\n%s\r\n" % (len(chunk), chunk), 4 * MiB)
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
