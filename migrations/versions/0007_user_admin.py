"""Accounts an admin can deactivate, and when each user was last seen.

Every existing account stays active; nobody has been seen yet.

Revision ID: 0007_user_admin
Revises: 0006_invites
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_user_admin"
down_revision: str | None = "0006_invites"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Added in place, no table rebuild: SQLite takes a NOT NULL column with a default.
    op.add_column(
        "users",
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column("users", sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # SQLite rebuilds the table to drop a column; it must stay AUTOINCREMENT.
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("last_seen_at")
        batch.drop_column("is_active")
