"""Fan-out between server processes, behind one small interface chosen by URL.

Every backend hands a published event to this process's own handler at once, so
local sockets never wait for (or depend on) the network; a networked backend also
carries it to every other process.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import orjson

from chat.events import ControlEvent, RoomEvent
from chat.settings import SettingsError

log = logging.getLogger(__name__)

# Receives room events, several at once when they were published together.
OnEvents = Callable[[list[RoomEvent]], None]
# Receives an event meant for every process rather than a room (a session ended).
OnControl = Callable[[ControlEvent], None]
# Called whenever events may have been missed: the broker (or another process's) reconnected.
OnReconnect = Callable[[], None]
# Told when this process loses its broker connection (False) and has it again (True).
OnState = Callable[[bool], None]

REDIS_TIMEOUT_SECS = 2.0
RECONNECT_MIN_SECS = 0.1
RECONNECT_MAX_SECS = 5.0
# How soon the listener notices that a publish failed, and subscribes afresh.
LISTEN_POLL_SECS = 1.0


class Broker(Protocol):
    async def connect(
        self, on_events: OnEvents, on_control: OnControl, on_reconnect: OnReconnect
    ) -> None:
        """Start delivering everything published, this process's own events included."""

    async def disconnect(self) -> None: ...

    async def publish(self, events: Sequence[RoomEvent]) -> None:
        """Publish room events; each room's keep their order."""

    async def publish_control(self, event: ControlEvent) -> None: ...

    async def is_healthy(self) -> bool: ...


class MemoryBroker:
    """One process: publishing is a direct call, with no copy and no task switch."""

    def __init__(self) -> None:
        self._on_events: OnEvents | None = None
        self._on_control: OnControl | None = None

    async def connect(
        self, on_events: OnEvents, on_control: OnControl, on_reconnect: OnReconnect
    ) -> None:
        self._on_events, self._on_control = on_events, on_control

    async def disconnect(self) -> None:
        self._on_events = self._on_control = None

    async def publish(self, events: Sequence[RoomEvent]) -> None:
        if self._on_events is not None:
            self._on_events(list(events))

    async def publish_control(self, event: ControlEvent) -> None:
        if self._on_control is not None:
            self._on_control(event)

    async def is_healthy(self) -> bool:
        return True


def pack_events(events: Sequence[RoomEvent]) -> bytes:
    """Room events as one Redis message: per event a header line, then its payload.

    Room names, kinds and usernames hold no spaces, and no username is "-".
    """
    parts: list[bytes] = []
    for event in events:
        skip = event.skip_user.encode() if event.skip_user is not None else b"-"
        header = b"%s %s %d %s %d\n" % (
            event.room.encode(),
            event.kind.encode(),
            event.seq,
            skip,
            len(event.payload),
        )
        parts += (header, event.payload)
    return b"".join(parts)


def unpack_events(data: bytes) -> list[RoomEvent]:
    events: list[RoomEvent] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        room, kind, seq, skip, size = data[pos:end].split(b" ")
        start = end + 1
        pos = start + int(size)
        events.append(
            RoomEvent(
                room.decode(),
                kind.decode(),
                data[start:pos],
                int(seq),
                None if skip == b"-" else skip.decode(),
            )
        )
    return events


class RedisBroker:
    """Many processes: one subscription per process, not per socket or room.

    Pub/sub is at-most-once: the database stays the truth, and after a reconnect
    `on_reconnect` lets this process, and through a notice every other one, catch
    its rooms up from it.
    """

    def __init__(self, url: str, namespace: str) -> None:
        import redis.asyncio as redis

        self._events_channel = f"{namespace}:events".encode()
        self._control_channel = f"{namespace}:control".encode()
        # Announces that a process has resubscribed, so the others read the database.
        self._catch_up_channel = f"{namespace}:catch-up".encode()
        self._redis = redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECS, socket_connect_timeout=REDIS_TIMEOUT_SECS
        )
        # Marks this process's own events, which it delivered locally already.
        self._node = uuid.uuid4().hex.encode()
        self._on_events: OnEvents | None = None
        self._on_control: OnControl | None = None
        self._on_reconnect: OnReconnect | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.on_state: OnState | None = None
        self._up = True

    def _state(self, up: bool) -> None:
        if up != self._up:
            self._up = up
            if self.on_state is not None:
                self.on_state(up)

    @property
    def client(self) -> object:
        return self._redis

    async def connect(
        self, on_events: OnEvents, on_control: OnControl, on_reconnect: OnReconnect
    ) -> None:
        from redis.exceptions import RedisError

        self._on_events, self._on_control = on_events, on_control
        self._on_reconnect = on_reconnect
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise SettingsError(f"cannot reach the broker at CHAT_BROKER_URL: {exc}") from None
        self._listener = asyncio.create_task(self._listen(), name="redis-listener")
        async with asyncio.timeout(REDIS_TIMEOUT_SECS * 2):
            await self._subscribed.wait()

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self._redis.aclose()

    async def publish(self, events: Sequence[RoomEvent]) -> None:
        assert self._on_events is not None
        self._on_events(list(events))
        await self._send(self._events_channel, pack_events(events))

    async def publish_control(self, event: ControlEvent) -> None:
        assert self._on_control is not None
        self._on_control(event)
        await self._send(self._control_channel, orjson.dumps(event))

    async def _send(self, channel: bytes, data: bytes) -> None:
        from redis.exceptions import RedisError

        if not self._subscribed.is_set():
            return  # Down: the others catch up from the database when this one resubscribes.
        try:
            await self._redis.publish(channel, self._node + data)
        except (RedisError, OSError) as exc:
            # The listener's connection may look fine (Redis stalled rather than went away),
            # so it resubscribes when it sees this, and the others catch up then.
            log.warning("broker publish failed: %s", exc)
            self._subscribed.clear()
            self._state(False)

    async def is_healthy(self) -> bool:
        from redis.exceptions import RedisError

        if not self._subscribed.is_set():
            return False
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def _listen(self) -> None:
        from redis.exceptions import RedisError

        delay = RECONNECT_MIN_SECS
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(
                    self._events_channel, self._control_channel, self._catch_up_channel
                )
                self._subscribed.set()
                if not first:
                    log.warning("broker reconnected")
                    self._state(True)
                    assert self._on_reconnect is not None
                    self._on_reconnect()
                    # What this process stored meanwhile was not published: the others
                    # must read it from the database too.
                    await self._redis.publish(self._catch_up_channel, self._node)
                first, delay = False, RECONNECT_MIN_SECS
                while self._subscribed.is_set():
                    message = await pubsub.get_message(timeout=LISTEN_POLL_SECS)
                    if message is not None and message["type"] == "message":
                        self._receive(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                if self._subscribed.is_set():
                    log.warning("broker connection lost: %s", exc)
                self._subscribed.clear()
                self._state(False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECS)
            finally:
                await pubsub.aclose()

    def _receive(self, channel: bytes, data: bytes) -> None:
        node, body = data[: len(self._node)], data[len(self._node) :]
        if node == self._node:
            return
        if channel == self._events_channel:
            assert self._on_events is not None
            self._on_events(unpack_events(body))
        elif channel == self._control_channel:
            assert self._on_control is not None
            self._on_control(orjson.loads(body))
        elif channel == self._catch_up_channel:
            assert self._on_reconnect is not None
            self._on_reconnect()


def check_broker(url: str) -> None:
    """Raise SettingsError unless the broker at `url` can be used (blocking)."""
    create_broker(url, "check")
    if urlsplit(url).scheme.startswith("redis"):
        import redis
        from redis.exceptions import RedisError

        try:
            with redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECS) as client:
                client.ping()
        except (RedisError, OSError, ValueError) as exc:
            raise SettingsError(f"cannot reach the broker at CHAT_BROKER_URL: {exc}") from None


def create_broker(url: str, namespace: str) -> Broker:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBroker()
    if scheme in ("redis", "rediss"):
        return RedisBroker(url, namespace)
    raise SettingsError(
        f"CHAT_BROKER_URL has an unsupported scheme: {url!r} (use memory:// or redis://)"
    )
