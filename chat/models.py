"""The stored schema. Every change here comes with an Alembic migration."""

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from chat.security import new_token_key


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored and returned as UTC, also on SQLite, which keeps no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    # AUTOINCREMENT: SQLite would otherwise hand a deleted user's id to the next one.
    __table_args__ = (
        UniqueConstraint("username_key"),
        Index("uq_users_username_skeleton", "username_skeleton", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(32))
    # Lower-cased once on write so "Alice" and "alice" collide in a unique index.
    username_key: Mapped[str] = mapped_column(String(32))
    # `fields.username_skeleton`: a unique index keeps out names that look like another's.
    # Nullable only so that SQLite can add the column without rebuilding the table.
    username_skeleton: Mapped[str | None] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    # A deactivated account cannot sign in; its key is rotated, so its tokens are refused.
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    # Every token carries it; a token whose key is not its account's is refused.
    token_key: Mapped[str] = mapped_column(String(32), default=new_token_key)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    # At sign-in and when a socket opens or closes; never per message.
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Room(Base):
    __tablename__ = "rooms"
    __table_args__ = (
        Index("ix_rooms_created_by", "created_by"),
        # A DM's members, once: two processes asked at once for one conversation make one room.
        Index("uq_rooms_dm_key", "dm_key", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # "public", "private" or "dm" (`chat.access` decides what each allows); never changes.
    kind: Mapped[str] = mapped_column(String(8), default="public", server_default="public")
    topic: Mapped[str] = mapped_column(String(250), default="", server_default="")
    # A DM's members' ids, sorted and joined by commas; None for other rooms.
    dm_key: Mapped[str | None] = mapped_column(String(128))
    # The newest message's `seq`. Taking the next one locks this row until commit,
    # so within a room messages become visible strictly in `seq` order, also when
    # several processes write to it: a reader that has seen N has seen all below N.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Counted against the creator's room quota; None for rooms made by migrations.
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )


class Membership(Base):
    """Who is in a room, and in which role ("owner", "moderator", "member")."""

    __tablename__ = "memberships"

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16), default="member")
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RoomBan(Base):
    """Who may not join, read or post in a room until a moderator lifts it."""

    __tablename__ = "room_bans"

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    banned_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # A client retrying with the same nonce gets the stored message back.
        Index("uq_messages_room_user_nonce", "room_id", "user_id", "nonce", unique=True),
        # Resuming: the messages of a room changed after a given sequence number. Only
        # changed messages are in it (a query's `change_seq > n` implies the condition), so
        # that storing a new message does not add to it.
        Index(
            "ix_messages_room_change",
            "room_id",
            "change_seq",
            sqlite_where=text("change_seq IS NOT NULL"),
            postgresql_where=text("change_seq IS NOT NULL"),
        ),
        # Counting a member's unread messages (`chat.attention`): a room's messages in
        # order with all the count looks at, so that it never reads the rows themselves,
        # which lie scattered among the other rooms' messages.
        Index("ix_messages_room_seq_author", "room_id", "seq", "user_id", "deleted"),
    )

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    # The message's id in the API: 1, 2, 3... within its room.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A deleted message keeps its row (its id, author and time); its body is emptied.
    deleted: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The room sequence number of the message's latest change (edit, delete, reaction):
    # changes take their numbers from the same sequence as messages (`Room.last_seq`).
    change_seq: Mapped[int | None] = mapped_column(BigInteger)


class MessageChange(Base):
    """One change of a message, by the room sequence number it took: what a process that
    missed the change's event reads to pass the room's sequence on without a gap."""

    __tablename__ = "message_changes"

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    message_seq: Mapped[int] = mapped_column(BigInteger)


class Reaction(Base):
    __tablename__ = "reactions"

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    message_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    emoji: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Mention(Base):
    """A message naming, as `@username`, someone who can read its room."""

    __tablename__ = "mentions"
    __table_args__ = (
        # A user's mentions in a room after their read marker.
        Index("ix_mentions_user_room_seq", "user_id", "room_id", "message_seq"),
    )

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    message_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class ReadMarker(Base):
    """How far a user has read a room: every message up to `up_to`. Never moves back."""

    __tablename__ = "read_markers"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    up_to: Mapped[int] = mapped_column(BigInteger, default=0)


class Invite(Base):
    """A code that lets `uses_left` more people register until `expires_at`."""

    __tablename__ = "invites"

    # Kept as given: invites are meant to be passed on, and expire.
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    uses_left: Mapped[int]
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SignIn(Base):
    """A session: one sign-in (a browser's, or an API client's token family), until it ends
    or goes unused for `CHAT_SESSION_DAYS`. Every access token names its session (`sid`)."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # "browser" (renewed by the server through its cookie) or "api" (refresh tokens).
    kind: Mapped[str] = mapped_column(String(8))
    # The account's token key at sign-in: a new key (a deactivated account) ends the session.
    token_key: Mapped[str] = mapped_column(String(32))
    user_agent: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RefreshToken(Base):
    """An API session's refresh tokens, by their SHA-256: the current one, and the retired
    ones, kept so that a retired token presented again is recognised as stolen."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    retired: Mapped[bool] = mapped_column(Boolean, default=False)


class Alert(Base):
    """Something an operator should know of (SPEC "Admin": alerts), kept so that an admin
    who opens `/admin` later sees it; the oldest beyond `chat.alerts.KEEP_ALERTS` go."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_ts", "ts"),)

    # The order alerts were stored in; `id` is the one clients see, given when raised
    # (an alert raised while storage is down is stored later, with its first `ts`).
    seq: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    level: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(512))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)


class StatsPoint(Base):
    """One node's figures over one minute (SPEC "Admin": dashboard); the last day is kept."""

    __tablename__ = "stats_points"

    # The minute's start, UTC.
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    connections: Mapped[int]
    messages_per_sec: Mapped[float]
    deliveries_per_sec: Mapped[float]
    loop_lag_p99_ms: Mapped[float]
