"""Conversations: room kinds and topics, memberships with roles, and bans.

Existing rooms become public; everyone who posted in a room becomes a member of it, its
creator its owner, and the first admin owns `general`.

Revision ID: 0009_conversations
Revises: 0008_drop_revoked
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_conversations"
down_revision: str | None = "0008_drop_revoked"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # In place, no table rebuild: SQLite takes NOT NULL columns with a default.
    op.add_column(
        "rooms", sa.Column("kind", sa.String(length=8), nullable=False, server_default="public")
    )
    op.add_column(
        "rooms", sa.Column("topic", sa.String(length=250), nullable=False, server_default="")
    )
    op.add_column("rooms", sa.Column("dm_key", sa.String(length=128), nullable=True))
    op.create_index("uq_rooms_dm_key", "rooms", ["dm_key"], unique=True)
    op.create_table(
        "memberships",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("room_id", "user_id"),
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    op.create_table(
        "room_bans",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("banned_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["banned_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("room_id", "user_id"),
    )
    op.create_index("ix_room_bans_user_id", "room_bans", ["user_id"])
    _carry_members_forward()


def _carry_members_forward() -> None:
    # Everyone who posted in a room, since their first message there.
    op.execute(
        "INSERT INTO memberships (room_id, user_id, role, joined_at) "
        "SELECT room_id, user_id, 'member', MIN(ts) FROM messages GROUP BY room_id, user_id"
    )
    # Each room's creator owns it; the first admin owns `general`.
    owners = (
        "SELECT id AS room_id, created_by AS user_id, created_at FROM rooms "
        "WHERE created_by IS NOT NULL "
        "UNION "
        "SELECT rooms.id, (SELECT MIN(id) FROM users WHERE is_admin), rooms.created_at "
        "FROM rooms WHERE rooms.name = 'general' AND EXISTS (SELECT 1 FROM users WHERE is_admin)"
    )
    op.execute(
        "UPDATE memberships SET role = 'owner' WHERE EXISTS (SELECT 1 FROM "
        f"({owners}) AS o WHERE o.room_id = memberships.room_id "
        "AND o.user_id = memberships.user_id)"
    )
    op.execute(
        "INSERT INTO memberships (room_id, user_id, role, joined_at) "
        f"SELECT o.room_id, o.user_id, 'owner', o.created_at FROM ({owners}) AS o "
        "WHERE NOT EXISTS (SELECT 1 FROM memberships m "
        "WHERE m.room_id = o.room_id AND m.user_id = o.user_id)"
    )


def downgrade() -> None:
    op.drop_index("ix_room_bans_user_id", table_name="room_bans")
    op.drop_table("room_bans")
    op.drop_index("ix_memberships_user_id", table_name="memberships")
    op.drop_table("memberships")
    op.drop_index("uq_rooms_dm_key", table_name="rooms")
    # SQLite rebuilds the table to drop a column; it must stay AUTOINCREMENT.
    with op.batch_alter_table("rooms", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("dm_key")
        batch.drop_column("topic")
        batch.drop_column("kind")
