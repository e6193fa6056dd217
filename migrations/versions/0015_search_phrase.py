"""Search: on PostgreSQL, an index of the messages in time order.

A search first checks the newest messages against their stored words, read backwards
along this index (`chat.search._postgres_recent`), and only when too few of them match
asks the GIN index for every match. A query matching often (a common word, a phrase of
common words, a short prefix) is then answered from a few thousand messages instead of
each of its many matches, where it may be. The columns are the results' order, so the
index also serves the cursor's `(ts, room_id, seq) <` condition.

SQLite: nothing (its FTS5 index is read in its own key order).

Revision ID: 0015_search_phrase
Revises: 0014_admin_history
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015_search_phrase"
down_revision: str | None = "0014_admin_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_messages_ts_room_seq ON messages (ts, room_id, seq)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_messages_ts_room_seq")
