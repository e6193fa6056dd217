"""Invites: codes that let people register when registration is by invite or closed.

Revision ID: 0006_invites
Revises: 0005_sessions
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_invites"
down_revision: str | None = "0005_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name="fk_invites_created_by_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_index("ix_invites_created_by", "invites", ["created_by"])


def downgrade() -> None:
    op.drop_index("ix_invites_created_by", table_name="invites")
    op.drop_table("invites")
