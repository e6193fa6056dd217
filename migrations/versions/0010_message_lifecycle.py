"""Messages that change, and attention: edits, deletions, reactions, mentions, read markers.

Existing messages are unedited and not deleted; everyone has read every room they are a
member of up to its newest message, so that an upgrade does not light up every badge.

Revision ID: 0010_message_lifecycle
Revises: 0009_conversations
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_message_lifecycle"
down_revision: str | None = "0009_conversations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # In place, no table rebuild: SQLite takes a NOT NULL column with a default.
    op.add_column("messages", sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "messages", sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("messages", sa.Column("change_seq", sa.BigInteger(), nullable=True))
    op.create_index("ix_messages_room_change", "messages", ["room_id", "change_seq"])
    op.create_table(
        "message_changes",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("message_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("room_id", "seq"),
    )
    op.create_table(
        "reactions",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("message_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("emoji", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("room_id", "message_seq", "user_id", "emoji"),
    )
    op.create_table(
        "mentions",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("message_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("room_id", "message_seq", "user_id"),
    )
    op.create_index("ix_mentions_user_room_seq", "mentions", ["user_id", "room_id", "message_seq"])
    op.create_table(
        "read_markers",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("up_to", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "room_id"),
    )
    op.create_index("ix_read_markers_room_id", "read_markers", ["room_id"])
    op.execute(
        "INSERT INTO read_markers (user_id, room_id, up_to) "
        "SELECT m.user_id, m.room_id, r.last_seq FROM memberships AS m "
        "JOIN rooms AS r ON r.id = m.room_id"
    )


def downgrade() -> None:
    op.drop_index("ix_read_markers_room_id", table_name="read_markers")
    op.drop_table("read_markers")
    op.drop_index("ix_mentions_user_room_seq", table_name="mentions")
    op.drop_table("mentions")
    op.drop_table("reactions")
    op.drop_table("message_changes")
    op.drop_index("ix_messages_room_change", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("change_seq")
        batch.drop_column("deleted")
        batch.drop_column("edited_at")
