"""Invites: codes an admin hands out so that people may register when registration is not open."""

import secrets
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chat.errors import InviteNotFound
from chat.fields import could_be_invite_code
from chat.models import Invite, User, utcnow

# 128 random bits: nobody guesses one, even at the registration rate limit.
INVITE_CODE_BYTES = 16


async def create(session: AsyncSession, creator: User, uses: int, lifetime: timedelta) -> Invite:
    """A new invite; invites that can no longer be used are forgotten meanwhile."""
    now = utcnow()
    await session.execute(
        delete(Invite).where(or_(Invite.uses_left <= 0, Invite.expires_at <= now))
    )
    invite = Invite(
        code=secrets.token_urlsafe(INVITE_CODE_BYTES),
        uses_left=uses,
        expires_at=now + lifetime,
        created_by=creator.id,
        created_at=now,
    )
    session.add(invite)
    await session.commit()
    return invite


async def usable(session: AsyncSession) -> Sequence[Invite]:
    """The invites that can still be used, newest first."""
    found = await session.scalars(
        select(Invite)
        .where(Invite.uses_left > 0, Invite.expires_at > utcnow())
        .order_by(Invite.created_at.desc(), Invite.code)
    )
    return found.all()


async def revoke(session: AsyncSession, code: str) -> None:
    """Delete the invite; InviteNotFound if there is none by that code."""
    if not could_be_invite_code(code):
        raise InviteNotFound()
    deleted = await session.scalar(delete(Invite).where(Invite.code == code).returning(Invite.code))
    await session.commit()
    if deleted is None:
        raise InviteNotFound()


async def is_usable(session: AsyncSession, code: str) -> bool:
    if not could_be_invite_code(code):
        return False
    found = await session.scalar(
        select(Invite.code).where(
            Invite.code == code, Invite.uses_left > 0, Invite.expires_at > utcnow()
        )
    )
    return found is not None


async def claim(session: AsyncSession, code: str) -> bool:
    """Take one use of the invite in the session's transaction, if it has one left.

    One statement checks and takes, so that two registrations cannot both take an invite's
    last use: the second one's update waits for the first's row lock (PostgreSQL) or write
    lock (SQLite) and then finds nothing left. The caller commits it with the new account, or
    rolls both back.
    """
    if not could_be_invite_code(code):
        return False
    taken = await session.scalar(
        update(Invite)
        .where(Invite.code == code, Invite.uses_left > 0, Invite.expires_at > utcnow())
        .values(uses_left=Invite.uses_left - 1)
        .returning(Invite.code)
    )
    return taken is not None
