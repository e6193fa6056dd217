"""User accounts: registration, authentication, admin promotion."""

from datetime import datetime

from sqlalchemy import Boolean, String, exists, func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat import invites
from chat.errors import RegistrationRefused, UsernameTaken
from chat.fields import is_valid_username, username_skeleton
from chat.models import Membership, Room, User, UTCDateTime, utcnow
from chat.ratelimit import LoginThrottle
from chat.security import PasswordHasher, hash_password, new_token_key
from chat.settings import Registration

# Held for the transaction that may create a PostgreSQL database's first account.
_FIRST_ACCOUNT_LOCK = 0x63686174


async def register(
    session: AsyncSession,
    username: str,
    password: str,
    hasher: PasswordHasher,
    *,
    registration: Registration = "open",
    invite: str = "",
    admin: bool = False,
) -> User:
    """Create an account; the first account of an empty database becomes admin.

    Unless `registration` is open, the account needs a use of `invite` (RegistrationRefused
    without one), or has to be the database's first, which is always let in: somebody must
    become the admin who hands out invites. `admin` makes any account an admin (the command
    line's `create-user --admin`).

    One statement decides admin and inserts (`NOT EXISTS` inside the `INSERT`), so two first
    registrations cannot both find the table empty: SQLite runs one write at a time, and on
    PostgreSQL, whose concurrent statements would each see the other's row as not yet there,
    an empty table's registrations take turns under a transaction lock. The invite's use is
    taken in the same transaction, so an account that cannot be created uses none.
    """
    gated = registration != "open"
    if gated:
        # Refuse before hashing: a refusal should cost the server next to nothing.
        allowed = not await has_accounts(session) or await invites.is_usable(session, invite)
        # Hand the connection back while the password waits to be hashed.
        await session.rollback()
        if not allowed:
            raise RegistrationRefused(bool(invite), registration == "closed")
    password_hash = await hasher.hash(password)
    now = utcnow()
    token_key = new_token_key()
    if session.get_bind().dialect.name == "postgresql" and not await has_accounts(session):
        await session.execute(select(func.pg_advisory_xact_lock(_FIRST_ACCOUNT_LOCK)))
    no_account_yet = ~exists().where(User.id.is_not(None))
    row = select(
        literal(username, String),
        literal(username.lower(), String),
        literal(username_skeleton(username), String),
        literal(password_hash, String),
        literal(True, Boolean) if admin else no_account_yet,
        literal(now, UTCDateTime),
        literal(token_key, String),
    )
    if gated and not (invite and await invites.claim(session, invite)):
        # Without an invite only the first account gets in.
        row = row.where(no_account_yet)
    columns = [
        "username",
        "username_key",
        "username_skeleton",
        "password_hash",
        "is_admin",
        "created_at",
        "token_key",
    ]
    statement = insert(User).from_select(columns, row).returning(User.id, User.is_admin)
    try:
        created = (await session.execute(statement)).one_or_none()
        if created is None:
            await session.rollback()
            raise RegistrationRefused(bool(invite), registration == "closed")
        if created.is_admin:
            await _own_general_if_unowned(session, created.id, now)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise UsernameTaken() from None
    user_id, is_admin = created
    return User(
        id=user_id,
        username=username,
        username_key=username.lower(),
        username_skeleton=username_skeleton(username),
        password_hash=password_hash,
        is_admin=is_admin,
        created_at=now,
        token_key=token_key,
    )


async def _own_general_if_unowned(session: AsyncSession, user_id: int, now: datetime) -> None:
    """The first admin owns `general`, which the database is made with, ownerless."""
    owned = exists().where(Membership.room_id == Room.id, Membership.role == "owner")
    row = select(
        Room.id, literal(user_id), literal("owner", String), literal(now, UTCDateTime)
    ).where(Room.name == "general", ~owned)
    await session.execute(
        insert(Membership).from_select(["room_id", "user_id", "role", "joined_at"], row)
    )


async def has_accounts(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(exists().where(User.id.is_not(None)))))


async def authenticate(
    session: AsyncSession,
    username: str,
    password: str,
    throttle: LoginThrottle,
    address: str,
    hasher: PasswordHasher,
) -> User | None:
    """The user with these credentials, or None; raises RateLimited after too many failures.

    The caller has refused oversized input (`fields.is_oversized_sign_in`) already.
    """
    # No account has a name outside the pattern, and the database need not see one (PostgreSQL
    # refuses a NUL in a query parameter); such names share one counter per address.
    key = username.lower() if is_valid_username(username) else ""
    await throttle.check(key, address)
    user = await find_by_username(session, username) if key else None
    if user is None:
        await hasher.verify(password, None)
        await throttle.failed(key, address)
        return None
    matches, new_hash = await hasher.verify_and_update(password, user.password_hash)
    # A deactivated account is hashed as long and answered as a wrong password is.
    if not matches or not user.is_active:
        await throttle.failed(key, address)
        return None
    await throttle.succeeded(key, address)
    if new_hash is not None:
        user.password_hash = new_hash
    user.last_seen_at = utcnow()
    await session.commit()
    return user


async def find_by_username(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username_key == username.lower()))


async def create_or_promote_admin(session: AsyncSession, username: str, password: str) -> User:
    """Make `username` an active admin with `password`, creating the account if needed."""
    user = await find_by_username(session, username)
    password_hash = await hash_password(password)
    if user is None:
        user = User(
            username=username,
            username_key=username.lower(),
            username_skeleton=username_skeleton(username),
        )
        session.add(user)
    user.password_hash = password_hash
    user.is_admin = True
    # The operator's way back in: an admin account it names is an active one.
    user.is_active = True
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise UsernameTaken() from None
    return user


async def set_password(
    session: AsyncSession, user: User, password: str, hasher: PasswordHasher
) -> None:
    user.password_hash = await hasher.hash(password)
    await session.commit()
