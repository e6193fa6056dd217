"""User accounts: registration, authentication, admin promotion."""

from datetime import datetime

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat.errors import UsernameTaken
from chat.fields import is_valid_username
from chat.models import RevokedToken, User, utcnow
from chat.ratelimit import LoginThrottle
from chat.security import hash_password, verify_password


async def register(session: AsyncSession, username: str, password: str) -> User:
    """Create an account; the first account of an empty database becomes admin."""
    password_hash = await hash_password(password)
    has_users = await session.scalar(select(exists().where(User.id.is_not(None))))
    user = User(
        username=username,
        username_key=username.lower(),
        password_hash=password_hash,
        is_admin=not has_users,
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise UsernameTaken() from None
    return user


async def authenticate(
    session: AsyncSession, username: str, password: str, throttle: LoginThrottle, address: str
) -> User | None:
    """The user with these credentials, or None; raises RateLimited after too many failures."""
    throttle.check(username, address)
    # No account has a name outside the pattern, and the database need not see one (PostgreSQL
    # refuses a NUL in a query parameter).
    user = await find_by_username(session, username) if is_valid_username(username) else None
    if not await verify_password(password, user.password_hash if user else None):
        throttle.failed(username, address)
        return None
    return user


async def find_by_username(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username_key == username.lower()))


async def create_or_promote_admin(session: AsyncSession, username: str, password: str) -> User:
    """Make `username` an admin with `password`, creating the account if needed."""
    user = await find_by_username(session, username)
    password_hash = await hash_password(password)
    if user is None:
        user = User(username=username, username_key=username.lower())
        session.add(user)
    user.password_hash = password_hash
    user.is_admin = True
    await session.commit()
    return user


async def revoke_token(session: AsyncSession, token_id: str, expires_at: datetime) -> None:
    """Refuse the token from now on; forget tokens that have expired anyway."""
    await session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
    if await session.get(RevokedToken, token_id) is None:
        session.add(RevokedToken(token_id=token_id, expires_at=expires_at))
    await session.commit()


async def revoked_among(session: AsyncSession, token_ids: set[str]) -> set[str]:
    """Which of these tokens are signed out."""
    if not token_ids:
        return set()
    found = await session.scalars(
        select(RevokedToken.token_id).where(RevokedToken.token_id.in_(token_ids))
    )
    return set(found)


async def is_revoked(session: AsyncSession, token_id: str) -> bool:
    return bool(token_id) and await session.get(RevokedToken, token_id) is not None
