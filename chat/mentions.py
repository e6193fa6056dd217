"""`@username` in a message's body: who it names among those who may read the room.

Recorded in the same transaction as the message (`chat.batch`) or its edit
(`chat.changes`), on their DB-API cursor. A body without '@' costs nothing: no query.
"""

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine.interfaces import Dialect

from chat import access
from chat.fields import USERNAME_MAX_CHARS, USERNAME_MIN_CHARS
from chat.models import Room, User

# An @ that does not continue a word (an e-mail address names nobody), then a username.
_MENTION = re.compile(
    rf"(?<![A-Za-z0-9_.\-@])@([A-Za-z0-9_.\-]{{{USERNAME_MIN_CHARS},{USERNAME_MAX_CHARS}}})"
)
# Mentions looked up per message at most: a body naming more names the first ones.
MAX_MENTIONS = 50


def candidates(body: str) -> list[str]:
    """The username keys (lower case) the body may name, in order, each once."""
    if "@" not in body:
        return []
    keys: dict[str, None] = {}
    for match in _MENTION.finditer(body):
        token = match.group(1)
        # "@bob." at the end of a sentence names bob, unless "bob." is someone.
        for key in (token.lower(), token.rstrip(".-").lower()):
            if len(key) >= USERNAME_MIN_CHARS:
                keys[key] = None
        if len(keys) >= MAX_MENTIONS:
            break
    return list(keys)


def _readers_sql(dialect: Dialect, room_id: int, keys: list[str]) -> str:
    """Who among `keys` may read the room (`access.reads`), as the driver's SQL. The keys
    are usernames (letters, digits, '_', '.', '-'), so rendering them inline is safe."""
    query = (
        select(User.id, User.username)
        .select_from(User)
        .join(Room, Room.id == room_id)
        .where(User.username_key.in_(keys), access.reads())
    )
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def record(cursor: Any, dialect: Dialect, room_id: int, seq: int, body: str) -> tuple[str, ...]:
    """Store the mentions of message `seq` and return their usernames, sorted."""
    keys = candidates(body)
    if not keys:
        return ()
    cursor.execute(_readers_sql(dialect, room_id, keys))
    found = cursor.fetchall()
    if not found:
        return ()
    rows = ",".join(f"({int(room_id)},{int(seq)},{int(user_id)})" for user_id, _ in found)
    cursor.execute(f"INSERT INTO mentions (room_id, message_seq, user_id) VALUES {rows}")
    return tuple(sorted(username for _, username in found))
