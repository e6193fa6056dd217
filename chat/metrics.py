"""Live figures for the admin view."""

import asyncio
import time
from collections.abc import Callable

WINDOW_SECS = 5
# Lags kept between two history points: a minute of probes, with room to spare.
LAGS_KEPT_MAX = 20_000


class MessageRate:
    """Messages stored per second, averaged over the last few whole seconds."""

    def __init__(self) -> None:
        self._counts = [0] * (WINDOW_SECS + 1)
        self._seconds = [0] * (WINDOW_SECS + 1)
        # Every one counted since start, for the per-minute history.
        self.total = 0

    def add(self, count: int) -> None:
        self.total += count
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
        # Every lag measured since the last `take_p99_ms`: at most one per probe, a few
        # thousand a minute.
        self._lags: list[float] = []
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

    def take_p99_ms(self) -> float:
        """The 99th percentile of the lags since the last call, in milliseconds."""
        lags, self._lags = self._lags, []
        if not lags:
            return 0.0
        lags.sort()
        return lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.PROBE_SECS)
            lag = max(0.0, loop.time() - started - self.PROBE_SECS)
            self.max_secs = max(self.max_secs, lag)
            if self.observe is not None:
                self.observe(lag)
            if len(self._lags) < LAGS_KEPT_MAX:
                self._lags.append(lag)
