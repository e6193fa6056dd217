"""Username skeletons: a unique index refuses names that look like another's.

Existing accounts get their skeletons; of existing names that already look alike, the oldest
keeps the plain skeleton and the others get it suffixed with their id, so that the upgrade
never fails and no existing account is lost.

Revision ID: 0003_skeleton
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from chat.fields import username_skeleton

revision: str = "0003_skeleton"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

users = sa.table(
    "users",
    sa.column("id", sa.Integer()),
    sa.column("username", sa.String()),
    sa.column("username_skeleton", sa.String()),
)


def upgrade() -> None:
    op.add_column("users", sa.Column("username_skeleton", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    seen: set[str] = set()
    rows = conn.execute(sa.select(users.c.id, users.c.username).order_by(users.c.id)).all()
    for user_id, username in rows:
        skeleton = username_skeleton(username)
        if skeleton in seen:
            # No skeleton of a valid name holds "#": the suffixed one is unique.
            skeleton = f"{skeleton}#{user_id}"
        seen.add(skeleton)
        conn.execute(users.update().where(users.c.id == user_id).values(username_skeleton=skeleton))
    op.create_index("uq_users_username_skeleton", "users", ["username_skeleton"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_users_username_skeleton", table_name="users")
    op.drop_column("users", "username_skeleton")
