"""Token buckets: a burst allowance refilled at a sustained rate, one per key."""

import time

from chat.errors import RateLimited

# Buckets idle this long are full again and can be forgotten.
_IDLE_SWEEP_SECS = 300.0


class RateLimiter:
    def __init__(self, burst: int, per_sec: float) -> None:
        self._burst = float(burst)
        self._per_sec = per_sec
        self._buckets: dict[str, tuple[float, float]] = {}
        self._last_sweep = time.monotonic()

    def hit(self, key: str) -> None:
        """Take one token for `key`; raises RateLimited when none is left."""
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._per_sec)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited((1.0 - tokens) / self._per_sec)
        self._buckets[key] = (tokens - 1.0, now)
        if now - self._last_sweep > _IDLE_SWEEP_SECS:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < _IDLE_SWEEP_SECS}
