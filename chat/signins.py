"""Sessions: a sign-in that lasts while it is used, can be listed, and ends everywhere.

A session is a row; every access token names its session (`sid`) and is valid only while
the session is live: not ended, used within `CHAT_SESSION_DAYS`, and started under the
account's current token key. A browser session's short access token is renewed by the
server from its cookie (`chat.renewal`); an API session's by rotating refresh tokens.
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chat.models import RefreshToken, SignIn, User, utcnow
from chat.security import new_refresh_token, new_session_id, refresh_token_hash

Kind = Literal["browser", "api"]
BROWSER: Kind = "browser"
API: Kind = "api"
USER_AGENT_MAX_CHARS = 256
# `last_used_at` is written at most this often per session: a busy client costs no write
# per request, and a session's life is counted in days.
TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class LiveSession:
    id: str
    kind: str
    # When it ends unless used again.
    expires_at: datetime


class RefreshRefused(Exception):
    """The refresh token is unknown, or its session is over; `ended` names a session that
    ended just now because one of its retired tokens came back."""

    def __init__(self, ended: str | None = None) -> None:
        super().__init__("invalid refresh token")
        self.ended = ended


def _is_live(row: SignIn | None, user: User, life: timedelta, now: datetime) -> bool:
    return (
        row is not None
        and row.user_id == user.id
        and row.ended_at is None
        and row.last_used_at + life > now
        and row.token_key == user.token_key
    )


async def start(
    db: AsyncSession, user: User, kind: Kind, user_agent: str | None
) -> tuple[SignIn, str | None]:
    """A new session, and for an API session its first refresh token."""
    now = utcnow()
    row = SignIn(
        id=new_session_id(),
        user_id=user.id,
        kind=kind,
        token_key=user.token_key,
        user_agent=(user_agent or "")[:USER_AGENT_MAX_CHARS],
        created_at=now,
        last_used_at=now,
    )
    db.add(row)
    refresh = None
    if kind == API:
        # The session's row first: the refresh token refers to it.
        await db.flush()
        refresh = new_refresh_token()
        db.add(RefreshToken(token_hash=refresh_token_hash(refresh), session_id=row.id))
    await db.commit()
    return row, refresh


async def use(db: AsyncSession, session_id: str, user: User, life: timedelta) -> LiveSession | None:
    """The session if it is live, counted as used now; None otherwise."""
    return await use_row(db, await db.get(SignIn, session_id), user, life)


async def use_row(
    db: AsyncSession, row: SignIn | None, user: User, life: timedelta
) -> LiveSession | None:
    """`use` of a session row already read in `db`."""
    now = utcnow()
    if row is None or not _is_live(row, user, life, now):
        return None
    if now - row.last_used_at >= TOUCH_INTERVAL:
        row.last_used_at = now
        await db.commit()
    return LiveSession(row.id, row.kind, row.last_used_at + life)


async def rotate(db: AsyncSession, refresh: str, life: timedelta) -> tuple[User, SignIn, str]:
    """Retire `refresh` for a new one of the same session; RefreshRefused if it cannot be.

    A retired token presented again means two parties hold the session's tokens: the
    thief's or the owner's next use would fail anyway, so the whole session ends.
    """
    token_hash = refresh_token_hash(refresh)
    found = await db.get(RefreshToken, token_hash)
    if found is None:
        raise RefreshRefused()
    row = await db.get(SignIn, found.session_id)
    user = await db.get(User, row.user_id) if row is not None else None
    if row is None or user is None or not _is_live(row, user, life, utcnow()):
        raise RefreshRefused()
    session_id, user_id = row.id, row.user_id
    # One statement both checks and retires: of two requests racing with the same token,
    # one wins and the other counts as a reuse.
    retired = await db.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == token_hash, RefreshToken.retired.is_(False))
        .values(retired=True)
    )
    if getattr(retired, "rowcount", 0) != 1:
        await db.rollback()
        await end(db, user_id, [session_id])
        raise RefreshRefused(ended=session_id)
    new = new_refresh_token()
    db.add(RefreshToken(token_hash=refresh_token_hash(new), session_id=row.id))
    row.last_used_at = utcnow()
    await db.commit()
    return user, row, new


async def end(
    db: AsyncSession,
    user_id: int,
    session_ids: Collection[str] | None = None,
    keep: str | None = None,
) -> list[str]:
    """End the user's sessions named (all of them if None), except `keep`; the ids ended."""
    query = select(SignIn.id).where(SignIn.user_id == user_id, SignIn.ended_at.is_(None))
    if session_ids is not None:
        query = query.where(SignIn.id.in_(session_ids))
    if keep is not None:
        query = query.where(SignIn.id != keep)
    ended = list(await db.scalars(query))
    if ended:
        await db.execute(update(SignIn).where(SignIn.id.in_(ended)).values(ended_at=utcnow()))
        # Their retired refresh tokens need no recognising any more: the session is over.
        await db.execute(delete(RefreshToken).where(RefreshToken.session_id.in_(ended)))
    await db.commit()
    return ended


async def live_of(db: AsyncSession, user: User, life: timedelta) -> list[SignIn]:
    """The user's live sessions, most recently used first."""
    now = utcnow()
    rows = await db.scalars(
        select(SignIn)
        .where(
            SignIn.user_id == user.id,
            SignIn.ended_at.is_(None),
            SignIn.last_used_at > now - life,
            SignIn.token_key == user.token_key,
        )
        .order_by(SignIn.last_used_at.desc())
    )
    return list(rows)


async def over_among(db: AsyncSession, session_ids: set[str], life: timedelta) -> set[str]:
    """Which of these sessions are no longer live (ended, expired, or gone)."""
    if not session_ids:
        return set()
    now = utcnow()
    rows = (
        await db.execute(
            select(SignIn, User.token_key)
            .join(User, User.id == SignIn.user_id)
            .where(SignIn.id.in_(session_ids))
        )
    ).all()
    live = {
        row.id
        for row, token_key in rows
        if row.ended_at is None and row.last_used_at + life > now and row.token_key == token_key
    }
    return session_ids - live
