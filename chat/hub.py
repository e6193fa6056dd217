"""This process's sockets, grouped by room, and the fan-out to them.

Every socket has its own bounded send queue drained by its own task, so
delivering to a room is a loop of non-blocking puts: a slow socket is never
awaited there. A socket whose queue overflows is dropped (it can resume with
`since`), which keeps memory bounded and the room fast.
"""

import asyncio
from collections import Counter
from collections.abc import Iterator

import orjson
from starlette.websockets import WebSocket

# Close code for a socket that could not keep up with its room.
CLOSE_TOO_SLOW = 1013

# A queued frame: the message id it carries (0 for other frames) and its text.
Frame = tuple[int, str]


class Connection:
    __slots__ = (
        "close_code",
        "close_reason",
        "floor",
        "queue",
        "room",
        "sender",
        "user",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, room: str, user: str, queue_max: int) -> None:
        self.websocket = websocket
        self.room = room
        self.user = user
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(queue_max)
        # Messages up to this id were sent in the welcome's history already.
        self.floor = 0
        self.sender: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    def push(self, frame: Frame) -> None:
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.kick(CLOSE_TOO_SLOW, "too slow; reconnect with since")

    def kick(self, code: int, reason: str) -> None:
        """End this connection with `code`: its handler closes the socket."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self.sender is not None:
            self.sender.cancel()

    async def send_forever(self) -> None:
        if self.close_code is not None:
            return  # Kicked before sending began (during the welcome): nothing to cancel then.
        queue, send = self.queue, self.websocket.send_text
        while True:
            message_id, text = await queue.get()
            if message_id and message_id <= self.floor:
                continue
            await send(text)


class Hub:
    def __init__(self) -> None:
        self._rooms: dict[str, set[Connection]] = {}
        self._per_user: Counter[str] = Counter()
        self.connections = 0

    def add(self, connection: Connection) -> None:
        self._rooms.setdefault(connection.room, set()).add(connection)
        self._per_user[connection.user] += 1
        self.connections += 1

    def remove(self, connection: Connection) -> None:
        members = self._rooms.get(connection.room)
        if members is None or connection not in members:
            return
        members.discard(connection)
        self.connections -= 1
        self._per_user[connection.user] -= 1
        if not self._per_user[connection.user]:
            del self._per_user[connection.user]
        if not members:
            del self._rooms[connection.room]

    def user_connections(self, user: str) -> int:
        return self._per_user[user]

    def all(self) -> Iterator[Connection]:
        for members in self._rooms.values():
            yield from members

    def deliver(self, channel: str, payload: bytes) -> None:
        """Hand an event published on `room:NAME` to every local socket of that room."""
        members = self._rooms.get(channel.removeprefix("room:"))
        if not members:
            return
        event = orjson.loads(payload)
        frame: Frame = (event["id"] if event["type"] == "message" else 0, payload.decode())
        skip = event["user"] if event["type"] == "typing" else None
        for connection in tuple(members):
            if connection.user != skip:
                connection.push(frame)
