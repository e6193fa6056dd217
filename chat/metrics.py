"""Live figures for the admin view."""

import asyncio
import time
from collections.abc import Callable

WINDOW_SECS = 5


class MessageRate:
    """Messages stored per second, averaged over the last few whole seconds."""

    def __init__(self) -> None:
        self._counts = [0] * (WINDOW_SECS + 1)
        self._seconds = [0] * (WINDOW_SECS + 1)

    def add(self, count: int) -> None:
        second = int(time.monotonic())
        slot = second % len(self._counts)
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = 0
        self._counts[slot] += count

    def per_sec(self) -> float:
        now = int(time.monotonic())
        total = sum(
            count
            for count, second in zip(self._counts, self._seconds, strict=True)
            if now - WINDOW_SECS <= second < now
        )
        return total / WINDOW_SECS


class LoopLag:
    """How late the event loop wakes up: the cost of anything that blocks it."""

    PROBE_SECS = 0.01

    def __init__(self) -> None:
        self.max_secs = 0.0
        self._task: asyncio.Task[None] | None = None
        # Given every sample too (the Prometheus histogram).
        self.observe: Callable[[float], None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe(), name="loop-lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def take_max_ms(self) -> float:
        """The worst lag since the last call, in milliseconds."""
        worst, self.max_secs = self.max_secs, 0.0
        return worst * 1000

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.PROBE_SECS)
            lag = max(0.0, loop.time() - started - self.PROBE_SECS)
            self.max_secs = max(self.max_secs, lag)
            if self.observe is not None:
                self.observe(lag)
