"""Accounts as admins manage them: the searchable list, deactivation and the admin role."""

from dataclasses import dataclass

from sqlalchemy import (
    ColumnExpressionArgument,
    and_,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from chat.errors import LastActiveAdmin, UserNotFound
from chat.fields import is_valid_username
from chat.models import User
from chat.security import new_token_key

USERS_DEFAULT_LIMIT = 50
USERS_MAX_LIMIT = 200
# Held (PostgreSQL) by every transaction that may take away an active admin.
_ADMIN_CHANGE_LOCK = 0x61646D6E


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    # How many users match the search, on every page.
    total: int


async def search(session: AsyncSession, q: str, limit: int, offset: int) -> UserPage:
    """Users whose name holds `q` (any case), in name order; `q` is a valid search
    (`fields.is_valid_username_search`)."""
    matches = User.username_key.contains(q.lower(), autoescape=True)
    total = await session.scalar(select(func.count()).select_from(User).where(matches))
    found = await session.scalars(
        select(User).where(matches).order_by(User.username_key).limit(limit).offset(offset)
    )
    return UserPage(list(found), total or 0)


def _as_sql(
    value: bool | None, column: ColumnExpressionArgument[bool]
) -> ColumnExpressionArgument[bool]:
    """The column's value after an update that sets it to `value` (None: left alone)."""
    if value is None:
        return column
    return true() if value else false()


async def update_user(
    session: AsyncSession, username: str, is_admin: bool | None, is_active: bool | None
) -> User:
    """Set the account's role and state; raises UserNotFound, or LastActiveAdmin when that
    would leave no active admin. Deactivating gives the account a new token key, so that
    every token it holds is refused from the commit on.

    One statement checks and updates, so that on SQLite, which runs one write at a time,
    nothing comes between. On PostgreSQL two such statements could each still see the
    other's admin as active; there every change that may take away an admin holds a
    transaction lock first, and so sees the one before it committed.
    """
    if not is_valid_username(username):
        raise UserNotFound()
    values: dict[str, object] = {}
    if is_admin is not None:
        values["is_admin"] = is_admin
    if is_active is not None:
        values["is_active"] = is_active
    if is_active is False:
        values["token_key"] = new_token_key()
    key = username.lower()
    if values:
        takes_admin = is_admin is False or is_active is False
        if takes_admin and session.get_bind().dialect.name == "postgresql":
            await session.execute(select(func.pg_advisory_xact_lock(_ADMIN_CHANGE_LOCK)))
        other = aliased(User)
        others_remain = (
            select(other.id)
            .where(other.is_admin, other.is_active, other.username_key != key)
            .exists()
        )
        stays_admin = and_(_as_sql(is_admin, User.is_admin), _as_sql(is_active, User.is_active))
        statement = (
            update(User)
            .where(
                User.username_key == key,
                or_(~and_(User.is_admin, User.is_active), stays_admin, others_remain),
            )
            .values(values)
            .returning(User.id)
        )
        updated = (await session.execute(statement)).scalar_one_or_none()
        await session.commit()
        if updated is None:
            exists = await session.scalar(select(User.id).where(User.username_key == key))
            raise UserNotFound() if exists is None else LastActiveAdmin()
    user = await session.scalar(
        select(User).where(User.username_key == key).execution_options(populate_existing=True)
    )
    if user is None:
        raise UserNotFound()
    return user


async def standing_keys(session: AsyncSession, user_ids: set[int]) -> dict[int, str]:
    """The token keys of those of these accounts that exist and are active."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(User.id, User.token_key).where(User.id.in_(user_ids), User.is_active)
    )
    return {user_id: token_key for user_id, token_key in rows.all()}
