"""Fan-out between server processes, behind one small interface chosen by URL.

Every backend hands a published event to this process's own handler at once, so
local sockets never wait for (or depend on) the network; a networked backend also
carries it to every other process.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from chat.settings import SettingsError

log = logging.getLogger(__name__)

# Receives a channel's payloads, several at once when they were published together.
Handler = Callable[[str, list[bytes]], None]
# Called whenever events may have been missed: the broker (or another process's) reconnected.
OnReconnect = Callable[[], None]

REDIS_TIMEOUT_SECS = 2.0
RECONNECT_MIN_SECS = 0.1
RECONNECT_MAX_SECS = 5.0
# How soon the listener notices that a publish failed, and subscribes afresh.
LISTEN_POLL_SECS = 1.0
# Announces that a process has resubscribed; not a room's channel (`room:NAME`).
CATCH_UP_CHANNEL = "_catch-up"


class Broker(Protocol):
    async def connect(self, handler: Handler, on_reconnect: OnReconnect) -> None:
        """Start delivering everything published to `handler`."""

    async def disconnect(self) -> None: ...

    async def publish(self, channel: str, payloads: list[bytes]) -> None:
        """Publish payloads on a channel, in order."""

    async def is_healthy(self) -> bool: ...


class MemoryBroker:
    """One process: publishing is a direct call, with no copy and no task switch."""

    def __init__(self) -> None:
        self._handler: Handler | None = None

    async def connect(self, handler: Handler, on_reconnect: OnReconnect) -> None:
        self._handler = handler

    async def disconnect(self) -> None:
        self._handler = None

    async def publish(self, channel: str, payloads: list[bytes]) -> None:
        if self._handler is not None:
            self._handler(channel, payloads)

    async def is_healthy(self) -> bool:
        return True


class RedisBroker:
    """Many processes: one pattern subscription per process, not per socket.

    Pub/sub is at-most-once: the database stays the truth, and after a reconnect
    `on_reconnect` lets this process, and through a notice every other one, catch
    its rooms up from it.
    """

    def __init__(self, url: str, namespace: str) -> None:
        import redis.asyncio as redis

        self._prefix = f"{namespace}:"
        self._redis = redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECS, socket_connect_timeout=REDIS_TIMEOUT_SECS
        )
        # Marks this process's own events, which it delivered locally already.
        self._node = uuid.uuid4().hex.encode()
        self._handler: Handler | None = None
        self._on_reconnect: OnReconnect | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def client(self) -> object:
        return self._redis

    async def connect(self, handler: Handler, on_reconnect: OnReconnect) -> None:
        from redis.exceptions import RedisError

        self._handler, self._on_reconnect = handler, on_reconnect
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

    async def publish(self, channel: str, payloads: list[bytes]) -> None:
        from redis.exceptions import RedisError

        assert self._handler is not None
        self._handler(channel, payloads)
        if not self._subscribed.is_set():
            return  # Down: the others catch up from the database when this one resubscribes.
        try:
            # One round trip for the lot; Redis keeps their order.
            async with self._redis.pipeline(transaction=False) as pipe:
                for payload in payloads:
                    pipe.publish(self._prefix + channel, self._node + b"|" + payload)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # The listener's connection may look fine (Redis stalled rather than went away),
            # so it resubscribes when it sees this, and the others catch up then.
            log.warning("broker publish failed: %s", exc)
            self._subscribed.clear()

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
                await pubsub.psubscribe(self._prefix + "*")
                self._subscribed.set()
                if not first:
                    log.warning("broker reconnected")
                    assert self._on_reconnect is not None
                    self._on_reconnect()
                    # What this process stored meanwhile was not published: the others
                    # must read it from the database too.
                    await self._redis.publish(self._prefix + CATCH_UP_CHANNEL, self._node + b"|")
                first, delay = False, RECONNECT_MIN_SECS
                while self._subscribed.is_set():
                    message = await pubsub.get_message(timeout=LISTEN_POLL_SECS)
                    if message is not None and message["type"] == "pmessage":
                        self._receive(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                if self._subscribed.is_set():
                    log.warning("broker connection lost: %s", exc)
                self._subscribed.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECS)
            finally:
                await pubsub.aclose()

    def _receive(self, channel: bytes, data: bytes) -> None:
        node, _, payload = data.partition(b"|")
        if node == self._node:
            return
        name = channel.decode().removeprefix(self._prefix)
        if name == CATCH_UP_CHANNEL:
            assert self._on_reconnect is not None
            self._on_reconnect()
            return
        assert self._handler is not None
        self._handler(name, [payload])


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
