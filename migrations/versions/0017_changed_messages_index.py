"""Changed messages: the index that finds a room's messages changed after a sequence
number holds only messages that have changed. Most never do, and every new message was
one more entry in it, written inside the commit that acknowledges the message.

Revision ID: 0017_changed_messages_index
Revises: 0016_unread
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_changed_messages_index"
down_revision: str | None = "0016_unread"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANGED = sa.text("change_seq IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_messages_room_change", table_name="messages")
    op.create_index(
        "ix_messages_room_change",
        "messages",
        ["room_id", "change_seq"],
        sqlite_where=CHANGED,
        postgresql_where=CHANGED,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_room_change", table_name="messages")
    op.create_index("ix_messages_room_change", "messages", ["room_id", "change_seq"])
