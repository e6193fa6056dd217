"""MessageWriter: stores messages in grouped commits and announces them after each."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from chat import search_index
from chat.batch import BatchSql, Pending, store_batch
from chat.db import Transactions
from chat.errors import StorageUnavailable
from chat.messages import StoredMessage

# Messages grouped into one transaction at most; one fsync then acknowledges them all.
WRITE_BATCH_MAX = 512
# SQLite's search index (`chat.search_index`): the writer indexes what it stored once no
# message has come for this long, so that a burst of messages is never slowed by it...
INDEX_IDLE_SECS = 0.2
# ...or, with messages still coming, once this many wait, a batch of them between two
# commits, so that a search never has more than about this many to index first.
INDEX_BACKLOG_MAX = 20_000
# Sequence numbers one indexing transaction covers at most: what a message may wait
# behind.
INDEX_BATCH_MAX = 2_000

log = logging.getLogger(__name__)

OnStored = Callable[[list[StoredMessage]], Awaitable[None]]
# Told when a commit failed: the database may be down.
OnFailure = Callable[[Exception], None]


class MessageWriter:
    """The one path by which messages are stored.

    Callers wait for their message's commit. While one commit runs, the next
    messages queue up and go into the following transaction together, so the
    number of fsyncs grows with the commit rate, not the message rate.
    """

    def __init__(
        self, transactions: Transactions, on_stored: OnStored, on_failure: OnFailure | None = None
    ) -> None:
        self._transactions = transactions
        self._on_failure = on_failure
        self._sql = BatchSql(transactions.dialect)
        self._on_stored = on_stored
        self._queue: asyncio.Queue[Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # The announcement of the last commit's messages (`_announce`), while it runs.
        self._announcing: asyncio.Task[None] | None = None
        # SQLite only: PostgreSQL indexes each message in its own commit (a GIN index's
        # pending list is cheap to add to).
        self._indexes = transactions.dialect.name == "sqlite"
        # Messages stored and perhaps not yet indexed: a hint for when to index (the
        # database's marks decide what). Another process, or a crash, may have left some.
        self._unindexed = 1 if self._indexes else 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-writer")

    async def stop(self) -> None:
        """Store everything already submitted, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task
        self._task = None

    def submit(
        self, room: str, room_id: int, user_id: int, username: str, body: str, nonce: str | None
    ) -> asyncio.Future[tuple[StoredMessage, bool]]:
        """Queue a message; the future gives it and whether it is new (False: a repeated
        nonce) once committed. Messages are stored in the order they are submitted."""
        if self._task is None:
            raise StorageUnavailable()
        pending = Pending(room, room_id, user_id, username, body, nonce)
        self._queue.put_nowait(pending)
        return pending.future

    async def store(
        self, room: str, room_id: int, user_id: int, username: str, body: str, nonce: str | None
    ) -> tuple[StoredMessage, bool]:
        """Store a message and wait for its commit."""
        return await self.submit(room, room_id, user_id, username, body, nonce)

    async def index_current(self) -> None:
        """Make the search index hold every message committed so far (SQLite: index the
        backlog in the writer's thread; PostgreSQL: it always does)."""
        if not self._indexes:
            return
        if self._task is None:
            raise StorageUnavailable()
        try:
            await self._transactions.run(search_index.everything)
        except Exception as exc:
            log.error("indexing messages for search failed: %r", exc)
            raise StorageUnavailable() from exc
        self._unindexed = 0

    async def _index_some(self) -> None:
        try:
            done = await self._transactions.run(
                partial(search_index.index_backlog, INDEX_BATCH_MAX)
            )
        except Exception as exc:
            # A search indexes what is left first; storing messages must go on.
            log.error("indexing messages for search failed: %r", exc)
            return
        self._unindexed = 0 if done else max(1, self._unindexed - INDEX_BATCH_MAX)

    async def _next(self) -> Pending | None:
        """The next queued item; meanwhile, after a pause, index the backlog, a batch at
        a time, looking for messages between batches."""
        while self._unindexed and self._queue.empty():
            try:
                return await asyncio.wait_for(self._queue.get(), INDEX_IDLE_SECS)
            except TimeoutError:
                await self._index_some()
        return await self._queue.get()

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._next()
            batch: list[Pending] = []
            item = first
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= WRITE_BATCH_MAX or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                created = await self._write(batch)
                if created:
                    self._announcing = asyncio.create_task(self._announce(created))
            if self._unindexed >= INDEX_BACKLOG_MAX:
                await self._index_some()
        await self.announced()
        if self._unindexed:
            # What is left would be indexed by the next start (or another process), but a
            # clean stop leaves the index whole.
            try:
                await self._transactions.run(search_index.everything)
            except Exception as exc:
                log.error("indexing messages for search failed: %r", exc)

    async def _write(self, batch: list[Pending]) -> list[StoredMessage]:
        """Commit the batch and answer each message's future; the new messages."""
        try:
            try:
                results = await self._transactions.run(partial(store_batch, self._sql, batch))
            except self._transactions.integrity_error:
                # Another process stored one of these nonces in the meantime:
                # one transaction per message sorts out which.
                results = []
                for pending in batch:
                    results += await self._transactions.run(
                        partial(store_batch, self._sql, [pending])
                    )
        except Exception as exc:
            # Whatever went wrong, the writer must live on: every later message
            # would wait for it forever.
            log.error("storing %d messages failed: %r", len(batch), exc)
            if self._on_failure is not None:
                self._on_failure(exc)
            results = None
        # One announcement at a time, in commit order: the previous commit's ran on the
        # event loop while this one ran in the writer's thread, so that neither waited for
        # the other. It ends before anything of this one is answered, so that each sender
        # hears back in the order it sent.
        await self.announced()
        if results is None:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(StorageUnavailable())
            return []
        # Only now, after the commit, is any message acknowledged.
        created: list[StoredMessage] = []
        for pending, (message, is_new) in zip(batch, results, strict=True):
            if is_new:
                created.append(message)
            if not pending.future.done():
                pending.future.set_result((message, is_new))
        if self._indexes:
            self._unindexed += len(created)
        return created

    async def announced(self) -> None:
        """Wait until every message committed so far has been announced."""
        task = self._announcing
        if task is not None:
            await task
            if self._announcing is task:
                self._announcing = None

    async def _announce(self, created: list[StoredMessage]) -> None:
        # Let the callers' callbacks (repeated-nonce acknowledgements) run before
        # the broadcast, so that each sender hears back in the order it sent.
        await asyncio.sleep(0)
        created.sort(key=lambda m: (m.room, m.id))
        try:
            await self._on_stored(created)
        except Exception:
            log.exception("publishing stored messages failed")
