"""Search: full-text indexes of message bodies, kept current by the database itself.

SQLite: the FTS5 table `messages_fts` over the view `messages_search` (the message's key
`room_id << 40 | seq` as rowid, body), and triggers on messages that add, replace and
remove a message's entry in the same transaction as the write; a deleted message has
none. PostgreSQL: a GIN index on `to_tsvector('simple', body)`. Both are built here for
the messages already stored. See `chat.search`.

Neither is in the models: SQLAlchemy cannot describe an FTS5 table, its triggers or an
expression index; the schema comparison leaves out the FTS5 table and its shadow tables
(`chat.search.is_search_table`).

A later migration that rebuilds the messages table on SQLite (a batch "move and copy")
drops these triggers with the old table: it must call `create_sqlite()` again.

Revision ID: 0012_search
Revises: 0010_message_lifecycle
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_search"
down_revision: str | None = "0010_message_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported from chat.search: a migration must keep doing what it did.
KEY = "((room_id << 40) + seq)"
ENTRY = "'delete', (old.room_id << 40) + old.seq, old.body"

SQLITE_UP = [
    f"""CREATE VIEW messages_search AS
        SELECT {KEY} AS search_key, body FROM messages WHERE NOT deleted""",
    # `prefix='3'`: a 3-letter prefix (the shortest a person types to narrow a search)
    # has a list of its own, read like a word's.
    """CREATE VIRTUAL TABLE messages_fts USING fts5(
        body,
        content='messages_search',
        content_rowid='search_key',
        tokenize='unicode61 remove_diacritics 2',
        prefix='3'
    )""",
    # Its words, so that another prefix can be asked as the words it completes.
    "CREATE VIRTUAL TABLE messages_fts_vocab USING fts5vocab(messages_fts, 'row')",
    """CREATE TRIGGER messages_search_insert AFTER INSERT ON messages
        WHEN NOT new.deleted
        BEGIN
            INSERT INTO messages_fts (rowid, body)
            VALUES ((new.room_id << 40) + new.seq, new.body);
        END""",
    # An edit replaces the entry; a deletion only removes it. Only when the body or the
    # flag changes: a reaction or a change number touches neither.
    f"""CREATE TRIGGER messages_search_update AFTER UPDATE OF body, deleted ON messages
        BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body)
            SELECT {ENTRY} WHERE NOT old.deleted;
            INSERT INTO messages_fts (rowid, body)
            SELECT (new.room_id << 40) + new.seq, new.body WHERE NOT new.deleted;
        END""",
    f"""CREATE TRIGGER messages_search_delete AFTER DELETE ON messages
        WHEN NOT old.deleted
        BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ({ENTRY});
        END""",
    # The messages already stored.
    "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS messages_search_delete",
    "DROP TRIGGER IF EXISTS messages_search_update",
    "DROP TRIGGER IF EXISTS messages_search_insert",
    "DROP TABLE IF EXISTS messages_fts_vocab",
    "DROP TABLE IF EXISTS messages_fts",
    "DROP VIEW IF EXISTS messages_search",
]
# Not CONCURRENTLY: migrations run in a transaction. On a large database the build takes
# a while (about a minute per several million messages) and blocks writes meanwhile.
POSTGRES_UP = [
    "CREATE INDEX ix_messages_body_search ON messages USING gin (to_tsvector('simple', body))"
]
POSTGRES_DOWN = ["DROP INDEX IF EXISTS ix_messages_body_search"]


def create_sqlite() -> None:
    for statement in SQLITE_UP:
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        create_sqlite()
    else:
        for statement in POSTGRES_UP:
            op.execute(statement)


def downgrade() -> None:
    statements = SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else POSTGRES_DOWN
    for statement in statements:
        op.execute(statement)
