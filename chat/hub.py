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
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from chat import events
from chat.closecodes import CloseCode
from chat.messages import StoredMessage
from chat.transport import DirectSink, direct_sink, wire_frame

log = logging.getLogger(__name__)

TOO_SLOW_REASON = "too slow; reconnect with since"
# A kicked socket's close frame, and what was sent before it, must leave our buffer
# within this long, or the connection is aborted: a client that does not read would
# otherwise hold the connection and its buffer for as long as it keeps TCP open.
CLOSE_DRAIN_SECS = 2.0

# A frame to send: the message id it carries (0 for other frames) and its encoded event.
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
        # Frames published before the welcome went out; None once it has.
        self.pending: list[Frame] | None = []
        # Where frames go straight to, once the welcome is out, if the server allows it.
        self.direct: DirectSink | None = None
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
        """Send consecutive messages; `wire` is all their frames, sent in one write."""
        if self.direct is None or frames[0][0] <= self.floor:
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
        for frame in pending:
            self.push(frame)

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


Fetch = Callable[[str, int], Awaitable[list[StoredMessage]]]
# Gap fills that find nothing before the room skips ahead rather than stalling.
FILL_ATTEMPTS = 20
FILL_RETRY_SECS = 0.05


class RoomFeed:
    """A room's local sockets, and where its message stream stands.

    Messages reach a process in `seq` order from itself but not from others, and
    pub/sub may drop some. The feed passes them on strictly in order, without gaps:
    one that arrives early is held while the missing ones are read from the database
    (committed already, as their seq is lower), so a client that has seen N has seen
    everything up to N and may resume with `since=N`.
    """

    __slots__ = ("filling", "held", "last", "members", "recheck")

    def __init__(self) -> None:
        self.members: set[Connection] = set()
        # The newest seq passed on; None until the first socket's welcome sets it.
        self.last: int | None = None
        self.held: dict[int, bytes] = {}
        self.filling = False
        # A catch-up asked for while a fill ran: read up to date once more after it.
        self.recheck = False

    def fan_out(self, seq: int, payload: bytes, skip_user: str | None = None) -> None:
        """Send an encoded event (a message if `seq`) to every member but `skip_user`."""
        frame, wire = (seq, payload), wire_frame(payload)
        for connection in tuple(self.members):
            if connection.user != skip_user:
                connection.push(frame, wire)

    def fan_out_run(self, run: list[tuple[int, bytes]]) -> None:
        """Send consecutive messages to every member, in one write per socket."""
        if len(run) <= 1:
            for seq, payload in run:
                self.fan_out(seq, payload)
            return
        wire = b"".join(wire_frame(payload) for _, payload in run)
        for connection in tuple(self.members):
            connection.push_run(run, wire)


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
        if feed is not None and feed.last is None:
            feed.last = last
            for seq in [seq for seq in feed.held if seq <= last]:
                del feed.held[seq]
            self._pass_on(room, feed)

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

    def deliver(self, channel: str, payloads: list[bytes]) -> None:
        """Hand events published on `room:NAME` to every local socket of that room."""
        room = channel.removeprefix("room:")
        feed = self._rooms.get(room)
        if feed is None:
            return
        run: list[tuple[int, bytes]] = []  # Messages next in line, sent together.
        for payload in payloads:
            event = orjson.loads(payload)
            kind = event["type"]
            if kind != "message":
                feed.fan_out_run(run)
                run = []
                feed.fan_out(0, payload, event["user"] if kind == "typing" else None)
                continue
            seq = event["id"]
            if feed.last is not None and seq == feed.last + 1 and not feed.held:
                feed.last = seq
                run.append((seq, payload))
            elif feed.last is None or seq > feed.last:
                feed.held[seq] = payload
            # Else passed on already, read from the database during a gap.
        feed.fan_out_run(run)
        if feed.held:
            self._pass_on(room, feed)

    def catch_up(self) -> None:
        """After events may have been lost (broker reconnect): read every room up to date."""
        for room, feed in self._rooms.items():
            if feed.last is not None:
                self._fill(room, feed, to_latest=True)

    def _pass_on(self, room: str, feed: RoomFeed) -> None:
        """Pass on held messages that are next in line; fill a gap from the database."""
        if feed.last is None or feed.filling:
            return
        while feed.last + 1 in feed.held:
            feed.last += 1
            feed.fan_out(feed.last, feed.held.pop(feed.last))
        if feed.held:
            self._fill(room, feed, to_latest=False)

    def _fill(self, room: str, feed: RoomFeed, *, to_latest: bool) -> None:
        if feed.filling:
            feed.recheck = feed.recheck or to_latest
            return
        feed.filling = True
        task = asyncio.create_task(self._read_gap(room, feed, to_latest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_gap(self, room: str, feed: RoomFeed, to_latest: bool) -> None:
        attempts = 0
        try:
            while feed.last is not None and self._rooms.get(room) is feed:
                if not feed.held and not to_latest:
                    return
                try:
                    missing = await self._fetch(room, feed.last)
                except Exception as exc:  # The database may be briefly away; retry.
                    log.warning("reading missed messages of %s failed: %s", room, exc)
                    missing = []
                for message in missing:
                    if message.id != feed.last + 1:
                        break
                    feed.last = message.id
                    feed.held.pop(message.id, None)
                    feed.fan_out(message.id, events.encode(events.message_event(message)))
                while feed.last + 1 in feed.held:
                    feed.last += 1
                    feed.fan_out(feed.last, feed.held.pop(feed.last))
                if not missing:
                    if not feed.held:
                        return
                    attempts += 1
                    if attempts >= FILL_ATTEMPTS:
                        # Should not happen: a held seq implies its predecessors are
                        # committed. Skip ahead rather than stall the room.
                        log.error("messages before %d of %s not found", min(feed.held), room)
                        feed.last = min(feed.held) - 1
                    else:
                        await asyncio.sleep(FILL_RETRY_SECS)
        finally:
            feed.filling = False
            if feed.recheck and self._rooms.get(room) is feed:
                feed.recheck = False
                self._fill(room, feed, to_latest=True)
