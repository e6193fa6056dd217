"""Signing out ends a session; the list of signed-out tokens goes.

Every token now names its session and is refused once the session has ended, so a
signed-out token needs no row of its own. The rows kept so far name tokens from before
sessions, which carry no session and are refused anyway: nothing is lost with them.

Revision ID: 0008_drop_revoked
Revises: 0007_user_admin
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_drop_revoked"
down_revision: str | None = "0007_user_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_revoked_tokens_expires_at", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")


def downgrade() -> None:
    op.create_table(
        "revoked_tokens",
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_id"),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])
