"""The server's long-lived parts, wired together, with their start-up and shutdown."""

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chat import accounts, events, messages
from chat.broker import Broker, RedisBroker, create_broker
from chat.db import Transactions, create_engine, session_factory, write_transactions
from chat.hub import Hub
from chat.messages import MessageWriter, StoredMessage
from chat.metrics import LoopLag, MessageRate
from chat.presence import MemoryPresence, Presence, RedisPresence
from chat.ratelimit import LoginThrottle, MessageLimiter, RateLimiter, SharedRateLimiter
from chat.rooms import RoomDirectory
from chat.security import TokenClaims
from chat.settings import Settings

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECS = 2.0
# Events for every process rather than a room: token revocations.
CONTROL_CHANNEL = "control"
CLOSE_SIGNED_OUT = 1008


@dataclass
class Services:
    settings: Settings
    signing_key: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # Where the message writer's transactions run.
    transactions: Transactions
    broker: Broker
    presence: Presence
    rooms: RoomDirectory
    hub: Hub = field(init=False)
    message_rate: MessageRate = field(default_factory=MessageRate)
    loop_lag: LoopLag = field(default_factory=LoopLag)
    limiter: MessageLimiter = field(init=False)
    login_throttle: LoginThrottle = field(init=False)
    writer: MessageWriter = field(init=False)
    # Replaced by a fresh event each time presence changes, waking the admin views.
    presence_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        s = self.settings
        self.limiter = RateLimiter(s.rate_burst, s.rate_per_sec)
        if isinstance(self.broker, RedisBroker):
            self.limiter = SharedRateLimiter(
                self.broker.client, s.rate_burst, s.rate_per_sec, s.redis_namespace
            )
        self.login_throttle = LoginThrottle(
            RateLimiter(s.login_failures_burst, s.login_failures_per_min / 60),
            RateLimiter(s.login_address_failures_burst, s.login_address_failures_per_min / 60),
        )
        self.writer = MessageWriter(self.transactions, self._publish_messages)
        self.hub = Hub(self._messages_after)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Services":
        engine = create_engine(settings)
        sessions = session_factory(engine)
        broker = create_broker(settings.broker_url, settings.redis_namespace)
        presence: Presence = MemoryPresence()
        if isinstance(broker, RedisBroker):
            presence = RedisPresence(
                broker.client, settings.presence_ttl_secs, settings.redis_namespace
            )
        return cls(
            settings=settings,
            signing_key=settings.signing_key(),
            engine=engine,
            sessions=sessions,
            transactions=write_transactions(settings, engine),
            broker=broker,
            presence=presence,
            rooms=RoomDirectory(sessions),
        )

    @property
    def token_ttl(self) -> timedelta:
        return timedelta(minutes=self.settings.token_ttl_minutes)

    async def start(self) -> None:
        # Listen to the broker before anything can be published.
        await self.broker.connect(self._on_event, self.hub.catch_up)
        await self.presence.start(
            self._expired, lambda: (self.hub.connections, self.message_rate.per_sec())
        )
        self.writer.start()
        self.loop_lag.start()

    async def stop(self) -> None:
        # By now the server has closed every socket (1012) and let their handlers
        # finish; store what they submitted, then let go of broker and database.
        await self.loop_lag.stop()
        await self.writer.stop()
        await self.transactions.close()
        await self.presence.stop()
        await self.broker.disconnect()
        await self.engine.dispose()

    def _on_event(self, channel: str, payloads: list[bytes]) -> None:
        if channel != CONTROL_CHANNEL:
            self.hub.deliver(_room_events(channel, payloads))
            return
        for payload in payloads:
            event = orjson.loads(payload)
            if event["type"] == "revoke":
                self.hub.kick_token(event["token_id"], CLOSE_SIGNED_OUT, "signed out")

    async def revoke(self, claims: TokenClaims) -> None:
        """Sign a token out: refused from now on, and its live sockets closed everywhere."""
        if not claims.token_id:
            return
        async with self.sessions() as session:
            await accounts.revoke_token(session, claims.token_id, claims.expires_at)
        event = {"type": "revoke", "token_id": claims.token_id}
        await self.broker.publish(CONTROL_CHANNEL, [events.encode(event)])

    async def _messages_after(self, room: str, after: int) -> list[StoredMessage]:
        room_id = await self.rooms.id_of(room)
        async with self.sessions() as session:
            return await messages.history(
                session, room_id, room, after=after, limit=messages.RESUME_MAX_MESSAGES
            )

    async def _publish_messages(self, messages: list[StoredMessage]) -> None:
        """Announce stored messages to their rooms; called only after their commit."""
        self.message_rate.add(len(messages))
        # A room's messages of one commit go out together, so that each socket gets
        # them in one write.
        by_room: dict[str, list[bytes]] = {}
        for message in messages:
            by_room.setdefault(message.room, []).append(
                events.encode(events.message_event(message))
            )
        for room, payloads in by_room.items():
            await self.broker.publish(f"room:{room}", payloads)

    async def publish(self, room: str, event: dict[str, object]) -> None:
        await self.broker.publish(f"room:{room}", [events.encode(event)])

    async def announce_presence(self, room: str, event: str, user: str, users: list[str]) -> None:
        await self.publish(room, events.presence_event(room, event, user, users))
        changed, self.presence_changed = self.presence_changed, asyncio.Event()
        changed.set()

    async def _expired(self, room: str, user: str, users: list[str]) -> None:
        """A user of a process that died has expired from presence."""
        await self.announce_presence(room, "leave", user, users)

    async def is_healthy(self) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECS):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                return await self.broker.is_healthy()
        except Exception as exc:
            log.warning("health check failed: %s", exc)
            return False


# Temporary: rebuilds the typed events from what a room's channel carries, until the
# broker carries RoomEvents itself.
def _room_events(channel: str, payloads: list[bytes]) -> list[events.RoomEvent]:
    room = channel.removeprefix("room:")
    built = []
    for payload in payloads:
        event = orjson.loads(payload)
        kind = event["type"]
        seq = event["id"] if kind == "message" else 0
        skip_user = event["user"] if kind == "typing" else None
        built.append(events.RoomEvent(room, kind, payload, seq, skip_user))
    return built
