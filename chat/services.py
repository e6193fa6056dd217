"""The server's long-lived parts, wired together, with their start-up and shutdown."""

import asyncio
import logging
import os
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, NamedTuple

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chat import accounts, events, messages, signins, storage, user_admin
from chat.admin_views import AdminViews
from chat.alerts import AlertingLoginThrottle, Alerts
from chat.attention import Attention, MeSockets
from chat.attention import mark_read as store_read_marker
from chat.broker import Broker, RedisBroker, create_broker
from chat.changes import Changes
from chat.closecodes import CloseCode
from chat.conversations import Conversations
from chat.db import Transactions, create_engine, session_factory, write_transactions
from chat.events import ControlEvent, RoomEvent
from chat.fields import password_problem
from chat.figures import ClusterFigures, Figures, ProcessFigures
from chat.history import Counters, StatsHistory
from chat.hub import Hub
from chat.last_seen import LastSeen
from chat.messages import StoredMessage
from chat.metrics import LoopLag, MessageRate
from chat.models import User
from chat.nodes import ClusterNodes
from chat.presence import MemoryPresence, Presence, RedisPresence
from chat.prometheus import Metrics, TimedTransactions
from chat.ratelimit import (
    LoginThrottle,
    MemoryLoginThrottle,
    MessageLimiter,
    RateLimiter,
    RedisLoginThrottle,
    SharedRateLimiter,
)
from chat.rooms import RoomDirectory
from chat.security import HASHING_THREADS, PasswordHasher
from chat.settings import Settings
from chat.shared_reads import SharedReads
from chat.writer import MessageWriter

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECS = 2.0
WRONG_PASSWORD = "The current password is wrong."
# How long a process remembers that an account was deactivated: longer than any socket
# takes from reading its account to joining the hub, which a deactivation may come between.
ENDED_USERS_MEMORY_SECS = 60.0
DEACTIVATED_REASON = "account deactivated"
# What a socket's welcome reads: the room's newest seq, the history, whether that was
# cut short, and on a resume the updates (`chat.ws`).
WelcomeRead = tuple[int, list[StoredMessage], bool, list[StoredMessage] | None]
# A token's account and live session, as a socket's admission reads them (`chat.deps`).
SignInRead = tuple[User, signins.LiveSession] | None


def _room_creations(settings: Settings, broker: Broker) -> MessageLimiter:
    """Room creations per account, across processes when there is Redis."""
    burst, per_sec = settings.room_create_burst, settings.room_create_per_hour / 3600
    if isinstance(broker, RedisBroker):
        return SharedRateLimiter(broker.client, burst, per_sec, settings.redis_namespace)
    return RateLimiter(burst, per_sec)


def _membership_changes(settings: Settings, broker: Broker) -> MessageLimiter:
    """Membership changes per account, across processes when there is Redis."""
    burst, per_sec = settings.membership_burst, settings.membership_per_min / 60
    if isinstance(broker, RedisBroker):
        namespace = f"{settings.redis_namespace}:membership"
        return SharedRateLimiter(broker.client, burst, per_sec, namespace)
    return RateLimiter(burst, per_sec)


def node_name() -> str:
    """This process, as alerts and the dashboard name it: host and process id."""
    return f"{socket.gethostname()[:50]}:{os.getpid()}"


class Author(NamedTuple):
    """Who posts a message: what posting needs of a user, kept by a socket for its life."""

    id: int
    username: str
    username_key: str


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
    figures: Figures
    rooms: RoomDirectory
    # What GET /metrics shows (chat.prometheus).
    metrics: Metrics = field(default_factory=Metrics)
    hub: Hub = field(init=False)
    message_rate: MessageRate = field(default_factory=MessageRate)
    loop_lag: LoopLag = field(default_factory=LoopLag)
    # A welcome's reads (newest seq, history, updates), shared by a room's sockets that
    # come back with the same `since` at once (`chat.ws`).
    welcome_reads: SharedReads[WelcomeRead] = field(default_factory=SharedReads)
    # A socket's account and session, shared by the sockets of one sign-in that come at once.
    sign_in_reads: SharedReads[SignInRead] = field(default_factory=SharedReads)
    limiter: MessageLimiter = field(init=False)
    # Socket handshakes per user (`chat.ws` keys them apart from the messages).
    handshakes: MessageLimiter = field(init=False)
    login_throttle: LoginThrottle = field(init=False)
    # Registrations per client address, and for everybody.
    register_limiter: MessageLimiter = field(init=False)
    register_global_limiter: MessageLimiter = field(init=False)
    hasher: PasswordHasher = field(init=False)
    writer: MessageWriter = field(init=False)
    # Replaced by a fresh event each time presence changes, waking the admin views.
    presence_changed: asyncio.Event = field(default_factory=asyncio.Event)
    # This process's open `/ws/admin` sockets.
    admin_views: AdminViews = field(default_factory=AdminViews)
    last_seen: LastSeen = field(init=False)
    conversations: Conversations = field(init=False)
    # Edits, deletions and reactions.
    changes: Changes = field(init=False)
    # This process's `/ws/me` sockets, and what tells them and the room sockets of reads
    # and activity.
    me: MeSockets = field(default_factory=MeSockets)
    attention: Attention = field(init=False)
    # This process's name in alerts and the dashboard.
    node: str = field(default_factory=node_name)
    alerts: Alerts = field(init=False)
    history: StatsHistory = field(init=False)
    # With Redis: the cluster's processes, each watching for the others to go.
    nodes: ClusterNodes | None = field(init=False, default=None)
    # Accounts deactivated lately, and when (monotonic) this process heard of it.
    _ended_users: dict[int, float] = field(default_factory=dict)
    # Memberships ended lately, by (room, user id), and when this process heard of it.
    _ended_memberships: dict[tuple[str, int], float] = field(default_factory=dict)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        s = self.settings
        self.limiter = RateLimiter(s.rate_burst, s.rate_per_sec)
        if isinstance(self.broker, RedisBroker):
            self.limiter = SharedRateLimiter(
                self.broker.client, s.rate_burst, s.rate_per_sec, s.redis_namespace
            )
        self.handshakes = RateLimiter(s.ws_handshakes_burst, s.ws_handshakes_per_sec)
        if isinstance(self.broker, RedisBroker):
            self.handshakes = SharedRateLimiter(
                self.broker.client,
                s.ws_handshakes_burst,
                s.ws_handshakes_per_sec,
                s.redis_namespace,
            )
        throttle = (
            s.login_failures_burst,
            s.login_failures_per_min,
            s.login_address_failures_burst,
            s.login_address_failures_per_min,
        )
        self.login_throttle = MemoryLoginThrottle(*throttle)
        per_hour = (s.register_per_hour / 3600, s.register_global_per_hour / 3600)
        self.register_limiter = RateLimiter(s.register_burst, per_hour[0])
        self.register_global_limiter = RateLimiter(s.register_global_burst, per_hour[1])
        if isinstance(self.broker, RedisBroker):
            client, namespace = self.broker.client, s.redis_namespace
            self.login_throttle = RedisLoginThrottle(client, namespace, *throttle)
            self.register_limiter = SharedRateLimiter(
                client, s.register_burst, per_hour[0], f"{namespace}:register"
            )
            self.register_global_limiter = SharedRateLimiter(
                client, s.register_global_burst, per_hour[1], f"{namespace}:register-all"
            )
        redis = self.broker.client if isinstance(self.broker, RedisBroker) else None
        self.alerts = Alerts(
            self.sessions,
            self.broker.publish_control,
            self._storage_writable,
            s.alert_window_secs,
            redis,
            s.redis_namespace,
        )
        if isinstance(self.broker, RedisBroker):
            self.broker.on_state = self._broker_state
            self.nodes = ClusterNodes(
                self.broker.client, s.redis_namespace, self.node, s.presence_ttl_secs, self.alerts
            )
        self.login_throttle = AlertingLoginThrottle(self.login_throttle, self.alerts)
        self.history = StatsHistory(self.sessions, self.node, self._counters, s.stats_period_secs)
        self.hasher = PasswordHasher(HASHING_THREADS, s.hash_queue_max, s.password_hash_memory_kib)
        self.loop_lag.observe = self.metrics.loop_lag.observe
        self.writer = MessageWriter(self.transactions, self._publish_messages, self._writer_failed)
        self.last_seen = LastSeen(self.sessions)
        self.hub = Hub(self._messages_after)
        self.attention = Attention(self.sessions, self.rooms, self.hub, self.me)
        self.conversations = Conversations(
            self.sessions,
            self.rooms,
            self.presence,
            self.publish,
            self.broker.publish_control,
            _membership_changes(self.settings, self.broker),
        )
        self.changes = Changes(
            self.transactions,
            self.sessions,
            self.conversations,
            self.limiter,
            self.publish,
            timedelta(minutes=s.edit_window_minutes),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> "Services":
        engine = create_engine(settings)
        sessions = session_factory(engine)
        broker = create_broker(settings.broker_url, settings.redis_namespace)
        presence: Presence = MemoryPresence()
        figures: Figures = ProcessFigures()
        metrics = Metrics()
        if isinstance(broker, RedisBroker):
            presence = RedisPresence(
                broker.client, settings.presence_ttl_secs, settings.redis_namespace
            )
            figures = ClusterFigures(broker.client, settings.redis_namespace)
        return cls(
            settings=settings,
            signing_key=settings.signing_key(),
            engine=engine,
            sessions=sessions,
            transactions=TimedTransactions(write_transactions(settings, engine), metrics.db_commit),
            broker=broker,
            presence=presence,
            figures=figures,
            rooms=RoomDirectory(
                sessions, _room_creations(settings, broker), settings.rooms_per_user
            ),
            metrics=metrics,
        )

    @property
    def token_ttl(self) -> timedelta:
        if self.settings.token_ttl_secs is not None:
            return timedelta(seconds=self.settings.token_ttl_secs)
        return timedelta(minutes=self.settings.token_ttl_minutes)

    @property
    def session_life(self) -> timedelta:
        return timedelta(days=self.settings.session_days)

    async def start(self) -> None:
        # Listen to the broker before anything can be published.
        await self.broker.connect(self._on_events, self._on_control, self._on_reconnect)
        await self.presence.start(self._expired)
        await self.figures.start(
            lambda: (
                self.hub.connections,
                self.message_rate.per_sec(),
                self.hub.deliveries.per_sec(),
            )
        )
        self.writer.start()
        self.loop_lag.start()
        self.metrics.start(self)
        self.history.start()
        if self.nodes is not None:
            await self.nodes.start()

    async def stop(self) -> None:
        # By now the server has closed every socket (1012) and let their handlers
        # finish; store what they submitted, then let go of broker and database.
        await self.metrics.stop()
        if self.nodes is not None:
            await self.nodes.stop()
        await self.alerts.stop()
        await self.history.stop()
        await self.loop_lag.stop()
        await self.writer.stop()
        await self.attention.stop()
        await self.last_seen.stop()
        await self.transactions.close()
        await self.figures.stop()
        await self.presence.stop()
        await self.broker.disconnect()
        await self.engine.dispose()
        self.hasher.close()

    async def admit_registration(self, address: str) -> None:
        """Count a registration against its address and the server; RateLimited past either."""
        await self.register_limiter.acquire(address)
        await self.register_global_limiter.acquire("all")

    def _on_events(self, room_events: list[RoomEvent]) -> None:
        self.hub.deliver(room_events)
        self.attention.on_events(room_events)

    def _counters(self) -> Counters:
        return Counters(
            self.hub.connections,
            self.message_rate.total,
            self.hub.deliveries.total,
            self.loop_lag.take_p99_ms(),
        )

    def _broker_state(self, up: bool) -> None:
        if up:
            self.alerts.raise_("broker_up", f"node {self.node} reached the broker again")
        else:
            self.alerts.raise_("broker_down", f"node {self.node} lost the broker")

    def _writer_failed(self, exc: Exception) -> None:
        if not isinstance(exc, DBAPIError) or storage.is_outage(exc):
            self.alerts.storage_failed(f"storing messages failed: {type(exc).__name__}")

    def registered(self, username: str, by: str) -> None:
        """A new account: the admins hear of it."""
        self.alerts.raise_("user_registered", f"{username} registered ({by})")

    def abusive_socket(self, username: str, where: str, why: str) -> None:
        """A socket was closed for abuse (4429): once per user and window."""
        self.alerts.raise_(
            "abuse_closed", f"a socket of {username} on {where} closed: {why}", username
        )

    async def _storage_writable(self) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECS):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                    return await storage.is_writable(self.settings, conn)
        except Exception:
            return False

    def _on_control(self, event: ControlEvent) -> None:
        if event["type"] == "alert":
            self.admin_views.push(events.encode(event["alert"]))
        elif event["type"] == "end_session":
            self._sessions_over(set(event["session_ids"]))
        elif event["type"] == "end_user":
            self._deactivated(event["user_id"])
        elif event["type"] == "end_admin":
            self.admin_views.kick_user(event["user_id"], "no longer an admin")
        elif event["type"] == "end_membership":
            self._membership_over(event["room"], event["user_id"], event["reason"])
        elif event["type"] == "read":
            self.attention.on_read(event["user"], event["room"], event["up_to"])
        elif event["type"] == "room":
            self.attention.on_room(event["users"], event["frame"])

    def _sessions_over(self, session_ids: set[str]) -> None:
        self.hub.kick_sessions(session_ids, CloseCode.UNAUTHENTICATED, "session ended")
        self.me.kick_sessions(session_ids, CloseCode.UNAUTHENTICATED, "session ended")
        self.admin_views.kick_sessions(session_ids)

    def _deactivated(self, user_id: int) -> None:
        now = time.monotonic()
        self._ended_users = {
            u: t for u, t in self._ended_users.items() if now - t < ENDED_USERS_MEMORY_SECS
        }
        self._ended_users[user_id] = now
        self.hub.kick_user(user_id, CloseCode.UNAUTHENTICATED, DEACTIVATED_REASON)
        self.me.kick_user(user_id, CloseCode.UNAUTHENTICATED, DEACTIVATED_REASON)
        self.admin_views.kick_user(user_id, DEACTIVATED_REASON)

    def _membership_over(self, room: str, user_id: int, reason: str) -> None:
        now = time.monotonic()
        self._ended_memberships = {
            k: t for k, t in self._ended_memberships.items() if now - t < ENDED_USERS_MEMORY_SECS
        }
        self._ended_memberships[(room, user_id)] = now
        self.hub.kick_user_in_room(room, user_id, CloseCode.FORBIDDEN, reason)

    def removed_since(self, room: str, user_id: int, since: float) -> bool:
        """Whether this process heard after the monotonic time `since` that the user was
        removed from the room: a socket admitted before then must not stay."""
        ended = self._ended_memberships.get((room, user_id))
        return ended is not None and ended >= since

    def deactivated_since(self, user_id: int, since: float) -> bool:
        """Whether this process heard of the account's deactivation after the monotonic
        time `since`: a socket that read its account before then must not stay."""
        ended = self._ended_users.get(user_id)
        return ended is not None and ended >= since

    def _on_reconnect(self) -> None:
        """Events may have been lost while a broker connection was down: read every room
        up to date, and look up whether any live socket's session ended or its account was
        deactivated meanwhile (stored, but its event may never have been
        carried)."""
        self.hub.catch_up()
        task = asyncio.create_task(self._recheck_sign_outs(), name="recheck-sign-outs")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recheck_sign_outs(self) -> None:
        sockets = [*self.hub.all(), *self.me.all()]
        users = {c.user_id for c in sockets} | {v.user_id for v in self.admin_views.all()}
        try:
            async with self.sessions() as session:
                keys = await user_admin.standing_keys(session, users)
        except Exception as exc:
            log.warning("could not recheck sign-outs after a broker reconnect: %s", exc)
            return
        # A deactivated account has no key here; any other change of key refuses the token.
        # Sockets of accounts not looked up opened meanwhile, with their account's key.
        for connection in sockets:
            if connection.user_id in users and keys.get(connection.user_id) != connection.token_key:
                connection.kick(CloseCode.UNAUTHENTICATED, DEACTIVATED_REASON)
        for view in self.admin_views.all():
            if view.user_id in users and keys.get(view.user_id) != view.token_key:
                view.kick(CloseCode.UNAUTHENTICATED, DEACTIVATED_REASON)
        sessions = {c.session_id for c in [*self.hub.all(), *self.me.all()]}
        sessions |= self.admin_views.session_ids()
        try:
            async with self.sessions() as session:
                over = await signins.over_among(session, sessions, self.session_life)
        except Exception as exc:
            log.warning("could not recheck sessions after a broker reconnect: %s", exc)
            return
        self._sessions_over(over)
        await self._recheck_memberships()

    async def _recheck_memberships(self) -> None:
        """Close the sockets of users removed from their rooms while the broker was away."""
        rooms_of: dict[int, set[str]] = {}
        for connection in self.hub.all():
            rooms_of.setdefault(connection.user_id, set()).add(connection.room)
        try:
            allowed = await self.conversations.still_admitted(rooms_of)
        except Exception as exc:
            log.warning("could not recheck memberships after a broker reconnect: %s", exc)
            return
        for connection in list(self.hub.all()):
            if connection.room not in allowed.get(connection.user_id, ()):
                connection.kick(CloseCode.FORBIDDEN, "removed from the room")

    async def administer_user(
        self, username: str, is_admin: bool | None, is_active: bool | None
    ) -> User:
        """Change an account's role or state (UserNotFound, LastActiveAdmin); a deactivated
        account's sockets close everywhere, and so do a demoted admin's admin views."""
        async with self.sessions() as session:
            user = await user_admin.update_user(session, username, is_admin, is_active)
        if is_active is False:
            await self.broker.publish_control({"type": "end_user", "user_id": user.id})
        elif is_admin is False:
            await self.broker.publish_control({"type": "end_admin", "user_id": user.id})
        return user

    async def end_sessions(
        self, user_id: int, session_ids: Collection[str] | None = None, keep: str | None = None
    ) -> list[str]:
        """End the user's sessions named (all if None) but `keep`: their tokens are refused
        from now on, and their live sockets close everywhere (1008)."""
        async with self.sessions() as session:
            ended = await signins.end(session, user_id, session_ids, keep)
        await self.sessions_ended(ended)
        return ended

    async def sessions_ended(self, session_ids: list[str]) -> None:
        """Close the sockets of sessions ended in the database, on every process."""
        if session_ids:
            await self.broker.publish_control({"type": "end_session", "session_ids": session_ids})

    async def change_password(
        self, user: User, current: str, new: str, address: str, keep: str
    ) -> str | None:
        """Set `user`'s password to `new` and end every session but `keep`; or say why not.
        The current password is checked like a sign-in (RateLimited, HashingBusy), so that
        a stolen session cannot guess it unchecked."""
        problem = password_problem(user.username, new)
        if problem is not None:
            return problem
        async with self.sessions() as session:
            found = await accounts.authenticate(
                session, user.username, current, self.login_throttle, address, self.hasher
            )
            if found is None:
                return WRONG_PASSWORD
            await accounts.set_password(session, found, new, self.hasher)
        await self.end_sessions(user.id, keep=keep)
        return None

    async def post_message(
        self, author: Author, room: str, room_id: int, body: str, nonce: str | None
    ) -> asyncio.Future[tuple[StoredMessage, bool]]:
        """The one way a message is posted, by socket or REST: counted against the
        author's rate limit (RateLimited), then queued for the writer's next commit
        (StorageUnavailable). The future gives the stored message and whether it is new
        (False: a repeated nonce) once committed; the broadcast, after the commit, is
        everybody's copy and the sender's acknowledgement."""
        await self.limiter.acquire(author.username_key)
        return self.writer.submit(room, room_id, author.id, author.username, body, nonce)

    async def _messages_after(self, room: str, after: int) -> list[RoomEvent]:
        """The room's sequence after `after`, messages and changes, for a hub to fill a gap."""
        room_id = await self.rooms.id_of(room)
        async with self.sessions() as session:
            found = await messages.events_after(
                session, room_id, room, after, messages.RESUME_MAX_MESSAGES
            )
        return [
            events.update_event(message, seq) if is_change else events.message_event(message)
            for seq, message, is_change in found
        ]

    async def _publish_messages(self, stored: list[StoredMessage]) -> None:
        """Announce stored messages to their rooms; called only after their commit, with
        each room's messages in order, so that each socket gets a commit's in one write."""
        self.message_rate.add(len(stored))
        self.metrics.messages_stored.inc(len(stored))
        await self.broker.publish([events.message_event(message) for message in stored])

    async def publish(self, event: RoomEvent) -> None:
        await self.broker.publish([event])

    async def mark_read(self, user: User, room: str, room_id: int, up_to: int) -> None:
        """Move the user's read marker (see `chat.attention`); if it moved, every socket of
        theirs hears of it, on every process."""
        moved = await store_read_marker(self.sessions, user.id, room_id, up_to)
        if moved is not None:
            await self.broker.publish_control(
                {"type": "read", "user": user.username, "room": room, "up_to": moved}
            )

    async def announce_presence(
        self, room: str, event: Literal["join", "leave"], user: str, users: list[str]
    ) -> None:
        await self.publish(events.presence_event(room, event, user, users))
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
                    if not await storage.is_writable(self.settings, conn):
                        self.alerts.storage_failed("full or read-only")
                        return False
                return await self.broker.is_healthy()
        except Exception as exc:
            log.warning("health check failed: %s", exc)
            return False
