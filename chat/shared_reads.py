"""Welcome reads shared by the sockets of a room that ask for the same thing at once.

After a restart every socket of a room comes back with the same `since` (the newest
message they all saw) within a few seconds: read one by one, a room of 500 sockets
is 500 identical history reads, each several trips to the database. Here the sockets
waiting for the same (room, since) share one read.

A socket may only share a read that starts after it asked: it joined the room's
fan-out before asking, and what was published before a read started but after the
socket joined would otherwise be in neither the read nor its queue. So a read is open
to newcomers until it starts, and a few reads run at a time: under a storm the
waiting reads gather the sockets that come meanwhile, and when it is quiet a read
starts at once.
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

# Reads running at once: the database serves them one after another anyway (SQLite's
# connection thread), and the ones waiting are those that gather sockets.
READS_AT_ONCE = 4


class SharedReads(Generic[T]):
    def __init__(self, at_once: int = READS_AT_ONCE) -> None:
        self._open: dict[Hashable, asyncio.Future[T]] = {}
        self._slots = asyncio.Semaphore(at_once)
        self._tasks: set[asyncio.Task[None]] = set()
        # Reads run, and the askers they served, for the figures in tests and benchmarks.
        self.reads = 0
        self.asked = 0

    async def read(self, key: Hashable, run: Callable[[], Awaitable[T]]) -> T:
        """`run()`'s result, from a read of `key` that starts after this call."""
        self.asked += 1
        future = self._open.get(key)
        if future is None:
            future = self._open[key] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._run(key, future, run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Shielded: one asker's cancellation (its socket closed) leaves the others' read.
        return await asyncio.shield(future)

    async def _run(
        self, key: Hashable, future: asyncio.Future[T], run: Callable[[], Awaitable[T]]
    ) -> None:
        try:
            async with self._slots:
                # From here on newcomers wait for a read of their own.
                del self._open[key]
                self.reads += 1
                result = await run()
        except BaseException as exc:
            if self._open.get(key) is future:
                del self._open[key]
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
                raise
            future.set_exception(exc)
            return
        future.set_result(result)
