"""Live figures for the admin view."""

import time

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
