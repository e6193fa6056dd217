"""SQLite's search index, kept current off the messages' commits (migration
0013_search_index).

Tokenizing a message into the FTS5 index inside the commit that stores it made every
acknowledgement wait for it. New messages are indexed afterwards instead, in batches,
by the message writer's thread: when the writer has been idle a moment, when the backlog
grows past a bound, and whenever a search asks (`everything`), so that a search sees
every message committed before it began, as if the index had been written with them.

What is indexed is recorded per room in `messages_fts_indexed` (`room_id`, `seq`):
every message of the room up to `seq` that is not deleted has its entry. The rooms'
`last_seq` says where each room's messages end: a room whose `last_seq` is beyond its
mark has a backlog. Both are in the database, so a crash, another process or an
operator's SQL leaves nothing out: the next batch, in whichever process, picks it up.

Edits and deletions stay synchronous (triggers on messages), for an indexed message
only: an FTS5 'delete' of an entry that was never written would corrupt the index. A
message changed before it is indexed is indexed later with what it then holds.
"""

from typing import Any

# A room without a row has nothing indexed (mark 0): rooms made after the migration.
_BACKLOG = """
    SELECT r.id, coalesce(w.seq, 0), r.last_seq
    FROM rooms AS r LEFT JOIN messages_fts_indexed AS w ON w.room_id = r.id
    WHERE r.last_seq > coalesce(w.seq, 0)
    ORDER BY r.id
"""
_INDEX = """
    INSERT INTO messages_fts (rowid, body)
    SELECT (room_id << 40) + seq, body FROM messages
    WHERE room_id = ? AND seq > ? AND seq <= ? AND NOT deleted
"""
_MARK = """
    INSERT INTO messages_fts_indexed (room_id, seq) VALUES (?, ?)
    ON CONFLICT (room_id) DO UPDATE SET seq = excluded.seq
"""


def index_backlog(most: int | None, cursor: Any) -> bool:
    """Index, in the cursor's transaction, the messages stored but not yet indexed: the
    rooms' ranges past their marks, at most `most` sequence numbers in all (messages,
    and the changes numbered among them), or all. True when nothing is left."""
    cursor.execute(_BACKLOG)
    left = most
    for room_id, mark, last_seq in cursor.fetchall():
        if left is not None and left <= 0:
            return False
        upto = last_seq if left is None else min(last_seq, mark + left)
        cursor.execute(_INDEX, (room_id, mark, upto))
        cursor.execute(_MARK, (room_id, upto))
        if left is not None:
            left -= upto - mark
            if upto < last_seq:
                return False
    return True


def everything(cursor: Any) -> bool:
    """The whole backlog: what a search runs first."""
    return index_backlog(None, cursor)
