"""Unread counts: the messages of a room in order with their author and whether deleted,
so that counting a member's unread messages reads only this index, never the rows.

Revision ID: 0016_unread
Revises: 0015_search_phrase
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016_unread"
down_revision: str | None = "0015_search_phrase"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_room_seq_author", "messages", ["room_id", "seq", "user_id", "deleted"]
    )


def downgrade() -> None:
    op.drop_index("ix_messages_room_seq_author", table_name="messages")
