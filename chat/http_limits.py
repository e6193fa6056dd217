"""Limits on what one HTTP client may make `chat serve` hold: bytes and lines of a request
head, bytes of a body, the time to send a head or a body, and connections open at once.

uvicorn's httptools protocol has none of these: a request head may grow without end
(the parser keeps every header line), a connection that sends nothing or sends a
byte a minute is kept forever, and each holds a file descriptor until the process
has none left for `/healthz`. `LimitedHttpToolsProtocol` adds them. It relies on
these parts of `uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`, as checked
against uvicorn 0.54.0 (re-check whenever the supported range of uvicorn moves):

- the parser callbacks `on_message_begin`, `on_url`, `on_header`,
  `on_headers_complete`, `on_body`, `on_message_complete`, and `on_response_complete`; an
  exception raised in a callback stops the parser with `HttpParserError`;
- `data_received` (re-implemented here so that a limit is told apart from a
  malformed request), `handle_websocket_upgrade`, `_should_upgrade`,
  `_unsupported_upgrade_warning`, `_unset_keepalive_if_required`;
- the attributes `transport`, `flow`, `cycle` (`response_started`,
  `response_complete`, `disconnected`, `keep_alive`, `message_event`), `connections`
  (every open HTTP and WebSocket connection of the process), `loop` and `parser`.

Only `uvicorn_http_options` and `raise_open_files_limit` are meant for callers; this
module is imported where a server is configured, never by the application itself.
"""

import asyncio
import functools
import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from chat.settings import Settings

log = logging.getLogger(__name__)

# After refusing a request the server still reads (and drops) what the client sends for
# this long before closing: closing a socket with unread input makes the kernel answer
# with a reset, which may destroy the refusal before the client has read it.
LINGER_SECS = 1.0
# At most one line per kind of limit within this time, so that a flood cannot flood the log.
LOG_EVERY_SECS = 10.0
# Descriptors the process needs besides client connections: database, broker, log files.
RESERVED_FILES = 64
# Where the hard limit is infinite, the soft one is raised to this (Linux's default nr_open).
INFINITE_FILES_CAP = 1 << 20


class LimitLog:
    """Logs each kind of limit hit at most once every LOG_EVERY_SECS, with how many
    hits the previous silent stretch held."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._silent: dict[str, int] = {}

    def hit(self, kind: str, client: tuple[str, int] | None) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < LOG_EVERY_SECS:
            self._silent[kind] = self._silent.get(kind, 0) + 1
            return
        self._last[kind] = now
        silent = self._silent.pop(kind, 0)
        address = client[0] if client else "unknown address"
        more = f" (and {silent} more in the last {LOG_EVERY_SECS:.0f} s)" if silent else ""
        log.warning("HTTP limit hit: %s, from %s%s", kind, address, more)


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    max_headers: int
    max_body_bytes: int
    head_timeout_secs: float
    body_timeout_secs: float
    max_connections: int
    # One per server, kept across its connections (and copied to each worker process).
    log: LimitLog = field(default_factory=LimitLog, compare=False)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request over a limit."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `Limits`."""

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._timer: asyncio.TimerHandle | None = None
        # Bytes received while the current request head is incomplete (a head that
        # never ends shows up nowhere else), and what the parser reported of it.
        self._in_head = True
        self._raw_head_bytes = 0
        self._head_bytes = 0
        self._header_count = 0
        self._content_length = 0
        self._body_bytes = 0
        self._request_begun = False
        self._refusal: tuple[int, str] | None = None
        self._refused = False

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too many connections")
            return
        self._arm(self.limits.head_timeout_secs, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._raw_head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._in_head and self._raw_head_bytes > self.limits.max_header_bytes:
            self._refuse(431, "request header block too large")

    def handle_websocket_upgrade(self) -> None:
        # The socket now belongs to the WebSocket protocol; nothing here may touch it.
        self._disarm()
        super().handle_websocket_upgrade()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._head_bytes = 0
        self._header_count = 0
        self._content_length = 0
        self._body_bytes = 0
        if self._timer is None:
            # After a keep-alive pause: the head is due within the deadline of its first byte.
            self._arm(self.limits.head_timeout_secs, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = (431, "too many request headers")
            raise _Refused
        self._count_head(len(name) + len(value) + 4)
        if name.lower() == b"content-length" and value.strip().isdigit():
            self._content_length = int(value)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._content_length > self.limits.max_body_bytes:
            # Refused before a byte of it is read (or a task started for it).
            self._refusal = (413, "request body too large")
            raise _Refused
        self._in_head = False
        self._raw_head_bytes = 0
        self._request_begun = False
        self._arm(self.limits.body_timeout_secs, self._body_timed_out)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        # A chunked body announces no length: it is counted as it comes.
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            self._cut_off_body(413, "request body too large")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_head = True
        self._disarm()
        super().on_message_complete()

    # Limits

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_bytes:
            self._refusal = (431, "request header block too large")
            raise _Refused

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._request_begun:
            self._refuse(408, "request head not received in time")
        else:
            self.limits.log.hit("connection idle before its first request", self.client)
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._timer = None
        self._cut_off_body(408, "request body not received in time")

    def _cut_off_body(self, status: int, reason: str) -> None:
        """Stop receiving the current request's body: the application sees a disconnect
        and can no longer write, so `status` is the answer (if it has not answered yet)."""
        cycle = self.cycle
        cycle.disconnected = True
        cycle.message_event.set()
        if cycle.response_started:
            self.limits.log.hit(reason, self.client)
            self._refused = True
            self._disarm()
            self.transport.close()
            return
        self._refuse(status, reason)

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` with `reason`, then read and drop the client's bytes until it
        closes or LINGER_SECS have passed."""
        self.limits.log.hit(reason, self.client)
        self._refused = True
        self._disarm()
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.disconnected:
            # A pipelined request is over a limit while the previous one is answered: no
            # answer may cut into that one, so read no more and close after it.
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        body = reason.encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
        ]
        if status == 503:
            head.append(b"retry-after: 1\r\n")
        head.append(b"connection: close\r\n\r\n")
        transport.write(b"".join(head) + body)
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self._timer = self.loop.call_later(LINGER_SECS, transport.close)


def connections_allowed(max_connections: int) -> int:
    """CHAT_MAX_CONNECTIONS, lowered to what this process's open files limit can hold:
    beyond it the server could not even accept a connection to refuse it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - RESERVED_FILES))


def limits(settings: Settings) -> Limits:
    return Limits(
        max_header_bytes=settings.http_max_header_bytes,
        max_headers=settings.http_max_headers,
        max_body_bytes=settings.http_max_body_bytes,
        head_timeout_secs=settings.http_head_timeout_secs,
        body_timeout_secs=settings.http_body_timeout_secs,
        max_connections=connections_allowed(settings.max_connections),
    )


def uvicorn_http_options(settings: Settings) -> dict[str, Any]:
    """The `http` protocol and keep-alive options of a uvicorn `Config` for these settings.

    A partial rather than a class made here: with `--workers`, uvicorn pickles its
    configuration into each worker process, and only a class it can import pickles."""
    return {
        "http": functools.partial(LimitedHttpToolsProtocol, limits=limits(settings)),
        "timeout_keep_alive": settings.http_keepalive_secs,
    }


def raise_open_files_limit(max_connections: int) -> int:
    """Raise this process's soft limit of open files to its hard limit (inherited by
    worker processes); warn when it leaves too few for `max_connections`, which is then
    lowered to fit (`connections_allowed`). The limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = INFINITE_FILES_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and max_connections + RESERVED_FILES > soft:
        log.warning(
            "CHAT_MAX_CONNECTIONS=%d leaves too few of the %d files this process may open: "
            "connections are limited to %d; raise the limit (ulimit -n) to allow more",
            max_connections,
            soft,
            connections_allowed(max_connections),
        )
    return soft
