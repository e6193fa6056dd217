"""This process's sockets, grouped by room, and the fan-out to them.

An event is encoded once per room, down to the bytes of its WebSocket frame
(server frames are not masked, so every recipient gets the same bytes). Handing
it to a socket is then one non-blocking write into that socket's transport: its
bounded send buffer, drained by the event loop. A slow socket is never awaited;
one whose buffer passes its bound is dropped (it can resume with `since`), which
keeps memory bounded and the room fast.

Until its welcome is sent a socket holds its frames back. On servers other than
uvicorn's sans-I/O WebSocket protocol it queues them instead, for a task of its own.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from chat import events
from chat.events import RoomEvent
from chat.messages import StoredMessage
from chat.sequencer import RoomSequencer

log = logging.getLogger(__name__)

# Close code for a socket that could not keep up with its room.
CLOSE_TOO_SLOW = 1013
CLOSE_GOING_AWAY = 1001

# A frame to send: the message id it carries (0 for other frames) and its encoded event.
Frame = tuple[int, bytes]


def wire_frame(payload: bytes) -> bytes:
    """A complete, unmasked WebSocket text frame carrying `payload` (RFC 6455, 5.2)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + size.to_bytes(8, "big")
    return header + payload


# Where `chat.app.SocketRoutes` leaves the server's send callable of a WebSocket scope.
SERVER_SEND_KEY = "chat.server_send"


def _raw_protocol(websocket: WebSocket) -> Any:
    """uvicorn's protocol behind this socket, if frames can be written to it directly."""
    protocol = getattr(websocket.scope.get(SERVER_SEND_KEY), "__self__", None)
    return protocol if isinstance(protocol, WebSocketsSansIOProtocol) else None


class Connection:
    """One room socket as the fan-out sees it.

    Kept small: a server holds thousands of idle ones. Its handler reads from the
    socket in its own task, `reader`, which `kick` cancels to end the connection.
    """

    __slots__ = (
        "buffer_max_bytes",
        "close_code",
        "close_reason",
        "direct",
        "floor",
        "pending",
        "protocol",
        "queue",
        "queue_max",
        "reader",
        "room",
        "sender",
        "token_id",
        "user",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        room: str,
        user: str,
        token_id: str,
        queue_max: int,
        buffer_max_bytes: int,
    ) -> None:
        self.websocket = websocket
        self.room = room
        self.user = user
        self.token_id = token_id
        self.queue_max = queue_max
        self.buffer_max_bytes = buffer_max_bytes
        self.protocol = _raw_protocol(websocket)
        # Frames published before the welcome went out; None once it has.
        self.pending: list[Frame] | None = []
        # True once frames go straight to the transport.
        self.direct = False
        # Only on servers whose transport cannot be written to: frames for `sender`.
        self.queue: asyncio.Queue[Frame] | None = None
        self.sender: asyncio.Task[None] | None = None
        # Messages up to this id were sent in the welcome's history already.
        self.floor = 0
        self.reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    def push(self, frame: Frame, wire: bytes | None = None) -> None:
        """Send `frame` without waiting; `wire` is its encoded frame, if already made."""
        if self.direct:
            message_id, payload = frame
            if message_id and message_id <= self.floor:
                return
            self._write(wire or wire_frame(payload))
        elif self.queue is not None:
            try:
                self.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self.kick(CLOSE_TOO_SLOW, "too slow; reconnect with since")
        elif self.pending is not None:
            if len(self.pending) >= self.queue_max:
                self.kick(CLOSE_TOO_SLOW, "too slow; reconnect with since")
            else:
                self.pending.append(frame)

    def push_run(self, frames: list[Frame], wire: bytes) -> None:
        """Send consecutive messages; `wire` is all their frames, sent in one write."""
        if not self.direct or frames[0][0] <= self.floor:
            for frame in frames:
                self.push(frame)
            return
        self._write(wire)

    def _write(self, wire: bytes) -> None:
        protocol = self.protocol
        transport = protocol.transport
        if protocol.close_sent or transport.is_closing():
            return
        transport.write(wire)
        if transport.get_write_buffer_size() > self.buffer_max_bytes:
            self.kick(CLOSE_TOO_SLOW, "too slow; reconnect with since")

    def start_sending(self) -> None:
        """After the welcome: send what queued up meanwhile, then every frame as it comes."""
        pending, self.pending = self.pending or [], None
        if self.close_code is not None:
            return
        if self.protocol is None:
            self.queue = asyncio.Queue(self.queue_max)
            for frame in pending:  # No more than queue_max: push() saw to that.
                self.queue.put_nowait(frame)
            self.sender = asyncio.create_task(self._send_forever())
            return
        self.direct = True
        for frame in pending:
            self.push(frame)

    def kick(self, code: int, reason: str) -> None:
        """End this connection with `code`: its handler stops reading and closes the socket."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        if self.sender is not None:
            self.sender.cancel()
        # From its own task the handler sees `close_code` when it reads on.
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()

    async def _send_forever(self) -> None:
        assert self.queue is not None
        queue, send = self.queue, self.websocket.send_text
        try:
            while True:
                message_id, payload = await queue.get()
                if message_id and message_id <= self.floor:
                    continue
                await send(payload.decode())
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.kick(CLOSE_GOING_AWAY, "send failed")


Fetch = Callable[[str, int], Awaitable[list[StoredMessage]]]
# Pause between reads of a room's missing messages that found none.
FILL_RETRY_SECS = 0.05
# Pause before reading again after the database failed a read.
FILL_ERROR_RETRY_SECS = 1.0


class RoomFeed:
    """A room's local sockets, and its messages put in order for them."""

    __slots__ = ("filling", "members", "sequencer")

    def __init__(self) -> None:
        self.members: set[Connection] = set()
        self.sequencer = RoomSequencer[RoomEvent]()
        # A task is reading the room's missing messages from the database.
        self.filling = False

    def fan_out(self, event: RoomEvent) -> None:
        """Send an event to every member but its `skip_user`."""
        frame, wire = (event.seq, event.payload), wire_frame(event.payload)
        for connection in tuple(self.members):
            if connection.user != event.skip_user:
                connection.push(frame, wire)

    def fan_out_run(self, run: list[RoomEvent]) -> None:
        """Send consecutive messages to every member, in one write per socket."""
        if len(run) <= 1:
            for event in run:
                self.fan_out(event)
            return
        frames = [(event.seq, event.payload) for event in run]
        wire = b"".join(wire_frame(event.payload) for event in run)
        for connection in tuple(self.members):
            connection.push_run(frames, wire)


class Hub:
    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._rooms: dict[str, RoomFeed] = {}
        self._per_user: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    def add(self, connection: Connection) -> None:
        self._rooms.setdefault(connection.room, RoomFeed()).members.add(connection)
        self._per_user[connection.user] += 1
        self.connections += 1

    def start_feed(self, room: str, last: int) -> None:
        """Begin the room's stream after `last`, the newest seq a joining socket has read."""
        feed = self._rooms.get(room)
        if feed is not None:
            feed.fan_out_run(feed.sequencer.start(last))
            self._fill(room, feed)

    def remove(self, connection: Connection) -> None:
        feed = self._rooms.get(connection.room)
        if feed is None or connection not in feed.members:
            return
        feed.members.discard(connection)
        self.connections -= 1
        self._per_user[connection.user] -= 1
        if not self._per_user[connection.user]:
            del self._per_user[connection.user]
        if not feed.members:
            del self._rooms[connection.room]

    def kick_token(self, token_id: str, code: int, reason: str) -> None:
        """End every socket opened with the token `token_id`."""
        for connection in list(self.all()):
            if connection.token_id == token_id:
                connection.kick(code, reason)

    def user_connections(self, user: str) -> int:
        return self._per_user[user]

    def all(self) -> Iterator[Connection]:
        for feed in self._rooms.values():
            yield from feed.members

    def deliver(self, room_events: list[RoomEvent]) -> None:
        """Hand events to the local sockets of their rooms, each room's messages in order."""
        by_room: dict[str, list[RoomEvent]] = {}
        for event in room_events:
            by_room.setdefault(event.room, []).append(event)
        for room, in_room in by_room.items():
            feed = self._rooms.get(room)
            if feed is not None:
                self._deliver_to(room, feed, in_room)

    def _deliver_to(self, room: str, feed: RoomFeed, room_events: list[RoomEvent]) -> None:
        run: list[RoomEvent] = []  # Messages next in line, sent together.
        for event in room_events:
            if event.seq:
                run += feed.sequencer.offer(event.seq, event)
            else:
                feed.fan_out_run(run)
                run = []
                feed.fan_out(event)
        feed.fan_out_run(run)
        self._fill(room, feed)

    def catch_up(self) -> None:
        """After events may have been lost (broker reconnect): read every room up to date."""
        for room, feed in self._rooms.items():
            feed.sequencer.catch_up()
            self._fill(room, feed)

    def _fill(self, room: str, feed: RoomFeed) -> None:
        """Read the room's missing messages, unless none are or a task does already."""
        if feed.filling or not feed.sequencer.needs_fill:
            return
        feed.filling = True
        task = asyncio.create_task(self._read_missing(room, feed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_missing(self, room: str, feed: RoomFeed) -> None:
        sequencer = feed.sequencer
        try:
            while self._rooms.get(room) is feed:
                after = sequencer.begin_fill()
                if after is None:
                    return
                try:
                    stored = await self._fetch(room, after)
                except Exception as exc:  # The database may be briefly away; retry.
                    log.warning("reading missed messages of %s failed: %s", room, exc)
                    sequencer.catch_up()  # This read's work is still to do.
                    await asyncio.sleep(FILL_ERROR_RETRY_SECS)
                    continue
                found = [(message.id, events.message_event(message)) for message in stored]
                released = sequencer.fill(found)
                if sequencer.skipped:
                    # Should not happen: a held seq implies its predecessors are committed.
                    skipped = sequencer.skipped
                    log.error("messages %d to %d of %s not found", skipped[0], skipped[-1], room)
                feed.fan_out_run(released)
                if not released and sequencer.needs_fill:
                    await asyncio.sleep(FILL_RETRY_SECS)
        finally:
            feed.filling = False
