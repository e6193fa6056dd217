"""Admin history: the alerts kept for `/admin`, and each node's per-minute figures.

Revision ID: 0014_admin_history
Revises: 0013_search_index
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_admin_history"
down_revision: str | None = "0013_search_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=512), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_alerts_ts", "alerts", ["ts"])
    op.create_table(
        "stats_points",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("connections", sa.Integer(), nullable=False),
        sa.Column("messages_per_sec", sa.Double(), nullable=False),
        sa.Column("deliveries_per_sec", sa.Double(), nullable=False),
        sa.Column("loop_lag_p99_ms", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "node"),
    )


def downgrade() -> None:
    op.drop_table("stats_points")
    op.drop_index("ix_alerts_ts", table_name="alerts")
    op.drop_table("alerts")
