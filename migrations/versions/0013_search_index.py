"""Search: SQLite indexes new messages after their commit, not inside it; PostgreSQL
stores each message's words.

SQLite: the insert trigger of 0012_search goes (the message writer's thread indexes new
messages in batches, see `chat.search_index`); the table `messages_fts_indexed` records,
per room, up to which message the index is written. The index 0012 built and its
triggers kept holds every message stored so far: each room's mark starts at its
last message. The update and delete triggers now touch the entry of an indexed message
only (an FTS5 'delete' of an entry never written corrupts the index); a message not yet
indexed is indexed later with what it then holds.

PostgreSQL: the words of each message are stored, in the generated column `body_tsv`
(`to_tsvector('simple', body)`, computed once when the row is written), and the GIN
index is built on that column instead of the expression. A search then never computes
a message's words again: a phrase is checked against the stored positions, and a room's
newest messages are checked one by one without tokenizing each. Adding the column
rewrites the table (about a minute per several million messages, writes blocked).

The mark table has no foreign key: rooms are never deleted by the server, and a cascade
could remove a room's mark before its messages, whose delete trigger then would leave
their entries behind.

A later migration that rebuilds the messages table on SQLite (a batch "move and copy")
drops these triggers with the old table: it must call `create_sqlite_triggers()` again.

Revision ID: 0013_search_index
Revises: 0012_search
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013_search_index"
down_revision: str | None = "0012_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported from chat: a migration must keep doing what it did.
OLD_KEY = "(old.room_id << 40) + old.seq"
NEW_KEY = "(new.room_id << 40) + new.seq"


def _indexed(row: str) -> str:
    """Whether message `row` (old or new) is at or below its room's mark."""
    return (
        f"{row}.seq <= coalesce("
        f"(SELECT seq FROM messages_fts_indexed WHERE room_id = {row}.room_id), 0)"
    )


SQLITE_TRIGGERS = [
    # An edit replaces the entry; a deletion only removes it. Only when the body or the
    # flag changes: a reaction or a change number touches neither.
    f"""CREATE TRIGGER messages_search_update AFTER UPDATE OF body, deleted ON messages
        BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body)
            SELECT 'delete', {OLD_KEY}, old.body WHERE NOT old.deleted AND {_indexed("old")};
            INSERT INTO messages_fts (rowid, body)
            SELECT {NEW_KEY}, new.body WHERE NOT new.deleted AND {_indexed("new")};
        END""",
    f"""CREATE TRIGGER messages_search_delete AFTER DELETE ON messages
        WHEN NOT old.deleted AND {_indexed("old")}
        BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body)
            VALUES ('delete', {OLD_KEY}, old.body);
        END""",
]
SQLITE_UP = [
    "DROP TRIGGER messages_search_insert",
    "DROP TRIGGER messages_search_update",
    "DROP TRIGGER messages_search_delete",
    """CREATE TABLE messages_fts_indexed (
        room_id INTEGER NOT NULL PRIMARY KEY,
        seq BIGINT NOT NULL
    )""",
    # Every message is indexed: the mark is past the last of each room (its `last_seq`,
    # or its highest id if rows were written behind the counter's back).
    """INSERT INTO messages_fts_indexed (room_id, seq)
        SELECT r.id, max(r.last_seq, coalesce((SELECT max(m.seq) FROM messages AS m
                                                WHERE m.room_id = r.id), 0))
        FROM rooms AS r""",
    *SQLITE_TRIGGERS,
]

# Back to 0012_search: its triggers, and an index of every message, whatever was left
# to index.
ENTRY_0012 = "'delete', (old.room_id << 40) + old.seq, old.body"
SQLITE_DOWN = [
    "DROP TRIGGER messages_search_update",
    "DROP TRIGGER messages_search_delete",
    "DROP TABLE messages_fts_indexed",
    """CREATE TRIGGER messages_search_insert AFTER INSERT ON messages
        WHEN NOT new.deleted
        BEGIN
            INSERT INTO messages_fts (rowid, body)
            VALUES ((new.room_id << 40) + new.seq, new.body);
        END""",
    f"""CREATE TRIGGER messages_search_update AFTER UPDATE OF body, deleted ON messages
        BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body)
            SELECT {ENTRY_0012} WHERE NOT old.deleted;
            INSERT INTO messages_fts (rowid, body)
            SELECT (new.room_id << 40) + new.seq, new.body WHERE NOT new.deleted;
        END""",
    f"""CREATE TRIGGER messages_search_delete AFTER DELETE ON messages
        WHEN NOT old.deleted
        BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ({ENTRY_0012});
        END""",
    "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
]


POSTGRES_UP = [
    "ALTER TABLE messages ADD COLUMN body_tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, body)) STORED",
    "DROP INDEX ix_messages_body_search",
    "CREATE INDEX ix_messages_body_tsv ON messages USING gin (body_tsv)",
]
POSTGRES_DOWN = [
    "DROP INDEX ix_messages_body_tsv",
    "ALTER TABLE messages DROP COLUMN body_tsv",
    "CREATE INDEX ix_messages_body_search ON messages USING gin (to_tsvector('simple', body))",
]


def create_sqlite_triggers() -> None:
    for statement in SQLITE_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    statements = SQLITE_UP if op.get_bind().dialect.name == "sqlite" else POSTGRES_UP
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else POSTGRES_DOWN
    for statement in statements:
        op.execute(statement)
