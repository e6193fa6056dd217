"""uvicorn's sans-I/O WebSocket protocol, with every byte it writes and reads bounded.

uvicorn answers each ping with a pong however many come and whether or not the client
reads them, and after a close it waits for its buffer to drain for as long as the
client keeps TCP open: a client that floods pings without reading held hundreds of
MiB. Here, per socket:

- incoming frames of every kind (pings included) pass a token bucket; past it the
  socket is closed with 4429; after a close, frames are not acted on, and past the
  bucket they are no longer read;
- a pong is not written while the socket's buffer is over `send_buffer_max_bytes`:
  the connection is aborted instead, buffer and all;
- a close waits CLOSE_WAIT_SECS at most for the client's echo or for the buffer to
  drain, then the connection is aborted.

And it holds less per socket, which a server of tens of thousands of idle sockets pays
for each: the handshake's request and response (their headers) go once the socket is
open, and the queue of received frames and the writable flag are plain lists and one
future at most, not an `asyncio.Queue` and an `asyncio.Event` (five deques, 760 bytes
each, empty).

Like `chat.transport`, this leans on uvicorn's internals (checked against 0.54.0).
The limits come from the settings by way of the lifespan's state (`limits_state`).
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from chat.closecodes import CloseCode
from chat.settings import Settings

log = logging.getLogger(__name__)

# uvicorn's `ws` setting naming this module's protocol.
PROTOCOL = "chat.wsprotocol:BoundedWebSocketProtocol"
# How long a closed connection may take to be let go of before it is aborted: the
# client's close echo, or the drain of what is still buffered for it.
CLOSE_WAIT_SECS = 1.0
# What the frame parser is given at a time. The transport hands over up to 256 KiB at once,
# ten thousand small frames that the parser would decode in one go, stalling every socket of
# the process, only for all but the first few to be refused: fed in slices, the rest of a
# flooding client's read is dropped unparsed once it is over its bucket.
PARSE_SLICE_BYTES = 8 * 1024
_LIMITS_KEY = "chat.socket_limits"


@dataclass(frozen=True, slots=True)
class SocketLimits:
    frames_burst: float
    frames_per_sec: float
    buffer_max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "SocketLimits":
        return cls(
            settings.ws_frames_burst, settings.ws_frames_per_sec, settings.send_buffer_max_bytes
        )


def limits_state(settings: Settings) -> dict[str, Any]:
    """What the app's lifespan yields, so that every connection's protocol finds its limits."""
    return {_LIMITS_KEY: SocketLimits.from_settings(settings)}


_DEFAULT_LIMITS = SocketLimits.from_settings(Settings.model_construct())

T = TypeVar("T")


class _Waitable:
    """Futures of the tasks waiting on this; no list at all while none is."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] | None = None

    async def _next_wakeup(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        waiters = self._waiters
        waiters.append(waiter)
        try:
            await waiter
        finally:
            waiters.remove(waiter)
            if not waiters and self._waiters is waiters:
                self._waiters = None

    def _wake(self, everyone: bool) -> None:
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return


class Inbox(_Waitable, Generic[T]):
    """What uvicorn's protocol uses of an `asyncio.Queue` (unbounded): `put_nowait`, `get`,
    `empty`, without the queue's three deques and its event."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        super().__init__()
        self._items: list[T] = []

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._wake(everyone=False)

    async def get(self) -> T:
        while not self._items:
            try:
                await self._next_wakeup()
            except BaseException:
                # Cancelled, perhaps after being woken for an item: another getter takes it.
                if self._items:
                    self._wake(everyone=False)
                raise
        item = self._items.pop(0)
        if self._items:
            # Another getter may have been woken for an item this one took.
            self._wake(everyone=False)
        return item

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Flag(_Waitable):
    """What uvicorn's protocol uses of an `asyncio.Event`, without its deque."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        super().__init__()
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        self._wake(everyone=True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        while not self._set:
            await self._next_wakeup()


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.limits: SocketLimits = app_state.get(_LIMITS_KEY, _DEFAULT_LIMITS)
        self.frame_tokens = self.limits.frames_burst
        self.frames_counted_at = self.loop.time()
        self.abort_timer: asyncio.TimerHandle | None = None
        self.flooded = False

    def data_received(self, data: bytes) -> None:
        for start in range(0, len(data), PARSE_SLICE_BYTES):
            if self.flooded or self.transport.is_closing():
                return
            super().data_received(data[start : start + PARSE_SLICE_BYTES])

    def handle_events(self) -> None:
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self.handle_connect(event)
            elif not isinstance(event, Frame):
                continue
            elif self.close_sent:
                # Only the client's close echo matters now: drop the pongs made for it.
                self.conn.data_to_send()
                if event.opcode is Opcode.CLOSE:
                    self.handle_close(event)
                elif not self._frame_allowed() and not self.transport.is_closing():
                    # Still flooding: read no more, rather than parse and drop all it
                    # sends until the close timer lets go of the connection.
                    self.flooded = True
                    self.transport.pause_reading()
            elif not self._frame_allowed():
                self._close_flooded()
            elif event.opcode is Opcode.PING:
                self.handle_ping()
            else:
                _HANDLERS[event.opcode](self, event)

    def _frame_allowed(self) -> bool:
        now, limits = self.loop.time(), self.limits
        elapsed, self.frames_counted_at = now - self.frames_counted_at, now
        tokens = min(limits.frames_burst, self.frame_tokens + elapsed * limits.frames_per_sec)
        allowed: bool = tokens >= 1.0
        self.frame_tokens = tokens - 1.0 if allowed else tokens
        return allowed

    def _close_flooded(self) -> None:
        self.flooded = True
        log.warning("%s: closed a socket sending frames too fast", self._peer())
        if not self.handshake_complete:
            # Frames sent ahead of the handshake's answer: no close frame may go out yet.
            self.transport.abort()
            return
        code, reason = CloseCode.TOO_MANY, "too many frames"
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self._start_close_timer()

    def handle_ping(self) -> None:
        pongs = b"".join(self.conn.data_to_send())
        if self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() > self.limits.buffer_max_bytes:
            log.warning("%s: aborted a socket that does not read its pongs", self._peer())
            self.transport.abort()
            return
        self.transport.write(pongs)

    async def send(self, message: Any) -> None:
        had_timer = self.close_timer is not None
        await super().send(message)
        if self.handshake_complete and self.response is not None:
            # Answered: the handshake's request and response are done with. The request's
            # headers are emptied too: the parser (a generator) keeps the request as a local
            # for as long as the socket is open.
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
        if self.close_timer is not None and not had_timer:
            self.close_timer.cancel()
            self._start_close_timer()

    def _start_close_timer(self) -> None:
        """After our close frame: wait for the echo, then let go of the connection."""
        if self.read_paused:
            # Read on, to see the echo.
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(CLOSE_WAIT_SECS, self._close_unechoed)

    def _close_unechoed(self) -> None:
        self.close_timer = None
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    # Every other way uvicorn closes the transport, which waits for the buffer to drain.

    def handle_close(self, event: Frame) -> None:
        super().handle_close(event)
        self._abort_unless_gone()

    def shutdown(self) -> None:
        super().shutdown()
        self._abort_unless_gone()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._abort_unless_gone()

    def handle_parser_exception(self) -> None:
        super().handle_parser_exception()
        self._abort_unless_gone()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        self._abort_unless_gone()

    def _abort_unless_gone(self) -> None:
        if self.transport.is_closing() and self.abort_timer is None and not self.disconnected:
            self.abort_timer = self.loop.call_later(CLOSE_WAIT_SECS, self._abort)

    def _abort(self) -> None:
        if not self.disconnected:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.abort_timer is not None:
            self.abort_timer.cancel()
            self.abort_timer = None

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"


_HANDLERS = {
    Opcode.CONT: BoundedWebSocketProtocol.handle_cont,
    Opcode.TEXT: BoundedWebSocketProtocol.handle_text,
    Opcode.BINARY: BoundedWebSocketProtocol.handle_bytes,
    Opcode.PONG: BoundedWebSocketProtocol.handle_pong,
    Opcode.CLOSE: BoundedWebSocketProtocol.handle_close,
}
