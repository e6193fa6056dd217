"""This process's sockets, grouped by room, and the fan-out to them.

An event is encoded once per room, down to the bytes of its WebSocket frame
(server frames are not masked, so every recipient gets the same bytes). Handing
it to a socket is then one non-blocking write into that socket's transport
(`chat.transport`): its bounded send buffer, drained by the event loop. A slow
socket is never awaited; one whose buffer passes its bound is aborted, buffer and
all (it can resume with `since`), which keeps memory bounded and the room fast.

Until its welcome is sent a socket holds its frames back. On servers whose transport
cannot be written to it queues them instead, for a task of its own.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence

from starlette.websockets import WebSocket, WebSocketDisconnect

from chat import events
from chat.closecodes import CloseCode
from chat.events import RoomEvent
from chat.messages import StoredMessage
from chat.metrics import MessageRate
from chat.sequencer import RoomSequencer
from chat.transport import DirectSink, direct_sink, wire_frame

log = logging.getLogger(__name__)

TOO_SLOW_REASON = "too slow; reconnect with since"
# A kicked socket's close frame, and what was sent before it, must leave our buffer
# within this long, or the connection is aborted: a client that does not read would
# otherwise hold the connection and its buffer for as long as it keeps TCP open.
CLOSE_DRAIN_SECS = 2.0

# A frame to send: its number in the room's sequence (a message's id, a change's number; 0
# for other frames) and its encoded event.
Frame = tuple[int, bytes]


class Connection:
    """One room socket as the fan-out sees it.

    Kept small: a server holds thousands of idle ones. Its handler reads from the
    socket in its own task, `reader`, which `kick` cancels to end the connection,
    and then calls `close`.
    """

    __slots__ = (
        "buffer_max_bytes",
        "close_code",
        "close_reason",
        "direct",
        "floor",
        "pending",
        "queue",
        "queue_max",
        "reader",
        "room",
        "sender",
        "session_id",
        "token_id",
        "token_key",
        "user",
        "user_id",
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
        session_id: str = "",
    ) -> None:
        self.websocket = websocket
        self.room = room
        self.user = user
        self.token_id = token_id
        self.session_id = session_id
        # Whose socket, and the account key its token carried: a deactivated account's
        # sockets close, also those a lost control event did not reach.
        self.user_id = 0
        self.token_key = ""
        self.queue_max = queue_max
        self.buffer_max_bytes = buffer_max_bytes
        # Frames published before the welcome went out; None once it has.
        self.pending: list[Frame] | None = []
        # Where frames go straight to, once the welcome is out, if the server allows it.
        self.direct: DirectSink | None = None
        # Only on servers whose transport cannot be written to: frames for `sender`.
        self.queue: asyncio.Queue[Frame] | None = None
        self.sender: asyncio.Task[None] | None = None
        # The welcome reflected the room's sequence up to here (messages in its history,
        # changes in their current state): frames numbered up to it are not sent again.
        self.floor = 0
        self.reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    def push(self, frame: Frame, wire: bytes | None = None) -> None:
        """Send `frame` without waiting; `wire` is its encoded frame, if already made."""
        if self.direct is not None:
            message_id, payload = frame
            if message_id and message_id <= self.floor:
                return
            self._write(self.direct, wire or wire_frame(payload))
        elif self.queue is not None:
            try:
                self.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self.kick(CloseCode.TOO_SLOW, TOO_SLOW_REASON)
        elif self.pending is not None:
            if len(self.pending) >= self.queue_max:
                self.kick(CloseCode.TOO_SLOW, TOO_SLOW_REASON)
            else:
                self.pending.append(frame)

    def push_run(self, frames: list[Frame], wire: bytes) -> None:
        """Send consecutive messages, or frames outside the room's sequence (numbered 0);
        `wire` is all their frames, sent in one write."""
        if self.direct is None or 0 < frames[0][0] <= self.floor:
            for frame in frames:
                self.push(frame)
            return
        self._write(self.direct, wire)

    def _write(self, sink: DirectSink, wire: bytes) -> None:
        buffered = sink.write(wire)
        if buffered is None:
            # The server is closing the socket (the peer closed, or missed its pongs)
            # and may not tell the handler until whatever is buffered has drained.
            self.kick(CloseCode.GOING_AWAY, "closed")
        elif buffered > self.buffer_max_bytes:
            # Nothing more reaches a reader this far behind, not even a close frame,
            # and it resumes with `since` either way: let go of it and its buffer now.
            sink.abort()
            self.kick(CloseCode.TOO_SLOW, TOO_SLOW_REASON)

    def start_sending(self) -> None:
        """After the welcome: send what queued up meanwhile, then every frame as it comes."""
        pending, self.pending = self.pending or [], None
        if self.close_code is not None:
            return
        sink = direct_sink(self.websocket)
        if sink is None:
            self.queue = asyncio.Queue(self.queue_max)
            for frame in pending:  # No more than queue_max: push() saw to that.
                self.queue.put_nowait(frame)
            self.sender = asyncio.create_task(self._send_forever())
            return
        self.direct = sink
        # In one write: under a storm a socket may have dozens waiting (presence frames).
        wire = b"".join(
            wire_frame(payload)
            for message_id, payload in pending
            if not message_id or message_id > self.floor
        )
        if wire:
            self._write(sink, wire)

    def kick(self, code: int, reason: str) -> None:
        """End this connection with `code`: its handler stops reading and calls `close`."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        if self.sender is not None:
            self.sender.cancel()
        # From its own task the handler sees `close_code` when it reads on.
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()

    async def close(self) -> None:
        """Send the close frame of `kick`, and abort the connection if it is not sent soon.

        Only where frames are written straight to the transport: elsewhere the server
        offers no abort, and the bounded queue is all this process holds for the socket.
        """
        assert self.close_code is not None
        code, reason, sink = self.close_code, self.close_reason, direct_sink(self.websocket)
        if sink is None:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
                await self.websocket.close(code, reason)
            return
        try:
            # The server's send waits while its buffer is over its high-water mark.
            async with asyncio.timeout(CLOSE_DRAIN_SECS):
                await self.websocket.close(code, reason)
        except TimeoutError:
            sink.abort()
            return
        except (RuntimeError, WebSocketDisconnect, OSError):
            pass  # Closed first, by the peer or the server; its buffer may still not drain.
        if sink.buffered_bytes():
            asyncio.get_running_loop().call_later(CLOSE_DRAIN_SECS, _abort_unless_drained, sink)

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
            self.kick(CloseCode.GOING_AWAY, "send failed")


def _abort_unless_drained(sink: DirectSink) -> None:
    if sink.buffered_bytes():
        sink.abort()


# Reads a room's sequence after a number: its messages, or their events (messages and
# changes, each with its number), ascending.
def kick_where(
    connections: Iterable[Connection], which: Callable[[Connection], bool], code: int, reason: str
) -> None:
    """End those of the connections `which` picks."""
    for connection in list(connections):
        if which(connection):
            connection.kick(code, reason)


Fetch = Callable[[str, int], Awaitable[Sequence[StoredMessage | RoomEvent]]]
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

    def fan_out(self, event: RoomEvent) -> int:
        """Send an event to every member but its `skip_user`; how many sockets got it."""
        frame, wire = (event.seq, event.payload), wire_frame(event.payload)
        members = tuple(self.members)
        if event.skip_user is None:
            for connection in members:
                connection.push(frame, wire)
            return len(members)
        sent = 0
        for connection in members:
            if connection.user != event.skip_user:
                connection.push(frame, wire)
                sent += 1
        return sent

    def fan_out_run(self, run: list[RoomEvent]) -> int:
        """Send consecutive messages to every member, in one write per socket; how many
        frames were handed out in all."""
        if len(run) <= 1:
            return sum(self.fan_out(event) for event in run)
        frames = [(event.seq, event.payload) for event in run]
        wire = b"".join(wire_frame(event.payload) for event in run)
        members = tuple(self.members)
        for connection in members:
            connection.push_run(frames, wire)
        return len(run) * len(members)


class Hub:
    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._rooms: dict[str, RoomFeed] = {}
        # Each user's sockets here: a read marker or an activity frame goes to all of them.
        self._per_user: dict[str, set[Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        # Frames handed to room sockets, counted per delivery rather than per frame.
        self.deliveries = MessageRate()

    def add(self, connection: Connection) -> None:
        self._rooms.setdefault(connection.room, RoomFeed()).members.add(connection)
        self._per_user.setdefault(connection.user, set()).add(connection)
        self.connections += 1

    def start_feed(self, room: str, last: int) -> None:
        """Begin the room's stream after `last`, the newest seq a joining socket has read."""
        feed = self._rooms.get(room)
        if feed is not None:
            self.deliveries.add(feed.fan_out_run(feed.sequencer.start(last)))
            self._fill(room, feed)

    def remove(self, connection: Connection) -> None:
        feed = self._rooms.get(connection.room)
        if feed is None or connection not in feed.members:
            return
        feed.members.discard(connection)
        self.connections -= 1
        own = self._per_user.get(connection.user)
        if own is not None:
            own.discard(connection)
            if not own:
                del self._per_user[connection.user]
        if not feed.members:
            del self._rooms[connection.room]

    def kick_sessions(self, session_ids: Collection[str], code: int, reason: str) -> None:
        """End every socket opened with a token of one of these sessions."""
        kick_where(self.all(), lambda c: c.session_id in session_ids, code, reason)

    def kick_user(self, user_id: int, code: int, reason: str) -> None:
        """End every socket of the account `user_id`."""
        kick_where(self.all(), lambda c: c.user_id == user_id, code, reason)

    def kick_user_in_room(self, room: str, user_id: int, code: int, reason: str) -> None:
        """End every socket of the account `user_id` in `room`."""
        feed = self._rooms.get(room)
        if feed is None:
            return
        for connection in list(feed.members):
            if connection.user_id == user_id:
                connection.kick(code, reason)

    def user_connections(self, user: str) -> int:
        return len(self._per_user.get(user, ()))

    def of_user(self, user: str) -> tuple[Connection, ...]:
        """The user's room sockets here."""
        return tuple(self._per_user.get(user, ()))

    def users(self) -> Collection[str]:
        """The users with a room socket here."""
        return self._per_user.keys()

    def all(self) -> Iterator[Connection]:
        for feed in self._rooms.values():
            yield from feed.members

    def deliver(self, room_events: list[RoomEvent]) -> None:
        """Hand events to the local sockets of their rooms, each room's messages in order."""
        by_room: dict[str, list[RoomEvent]] = {}
        for event in room_events:
            by_room.setdefault(event.room, []).append(event)
        delivered = 0
        for room, in_room in by_room.items():
            feed = self._rooms.get(room)
            if feed is not None:
                delivered += self._deliver_to(room, feed, in_room)
        if delivered:
            self.deliveries.add(delivered)

    def _deliver_to(self, room: str, feed: RoomFeed, room_events: list[RoomEvent]) -> int:
        run: list[RoomEvent] = []  # Messages next in line, sent together.
        delivered = 0
        for event in room_events:
            if event.seq:
                run += feed.sequencer.offer(event.seq, event)
            else:
                delivered += feed.fan_out_run(run)
                run = []
                delivered += feed.fan_out(event)
        delivered += feed.fan_out_run(run)
        self._fill(room, feed)
        return delivered

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
                found = [
                    (item.seq, item)
                    if isinstance(item, RoomEvent)
                    else (item.id, events.message_event(item))
                    for item in stored
                ]
                released = sequencer.fill(found)
                if sequencer.skipped:
                    # Should not happen: a held seq implies its predecessors are committed.
                    skipped = sequencer.skipped
                    log.error("messages %d to %d of %s not found", skipped[0], skipped[-1], room)
                self.deliveries.add(feed.fan_out_run(released))
                if not released and sequencer.needs_fill:
                    await asyncio.sleep(FILL_RETRY_SECS)
        finally:
            feed.filling = False
