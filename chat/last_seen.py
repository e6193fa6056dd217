"""When each user was last seen: written in batches, so that a storm of sockets opening
costs one UPDATE a second, not one per socket."""

import asyncio
import contextlib
import logging

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.models import User, utcnow

log = logging.getLogger(__name__)

# The shortest time between two writes of one process; a lone mark is written at once.
LAST_SEEN_WRITE_INTERVAL_SECS = 1.0


class LastSeen:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._pending: set[int] = set()
        self._writer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    def mark(self, user_id: int) -> None:
        """The user is here now."""
        self._pending.add(user_id)
        if self._writer is None and not self._closing.is_set():
            self._writer = asyncio.create_task(self._write_while_pending(), name="last-seen")

    async def _write_while_pending(self) -> None:
        try:
            while self._pending:
                await self._write()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), LAST_SEEN_WRITE_INTERVAL_SECS)
        finally:
            self._writer = None

    async def _write(self) -> None:
        user_ids, self._pending = self._pending, set()
        try:
            async with self._sessions() as session:
                await session.execute(
                    update(User).where(User.id.in_(user_ids)).values(last_seen_at=utcnow())
                )
                await session.commit()
        except Exception as exc:
            # A time the admins see, not worth retrying: the next mark writes a newer one.
            log.warning("could not store when users were last seen: %s", exc)

    async def stop(self) -> None:
        """Write what the closing sockets marked."""
        self._closing.set()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._pending:
            await self._write()
