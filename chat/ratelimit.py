"""Token buckets: a burst allowance refilled at a sustained rate, one per key."""

import contextlib
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

    def _tokens(self, key: str, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - stamp) * self._per_sec)

    def check(self, key: str) -> None:
        """Raise RateLimited if `key` has no token left, without taking one."""
        tokens = self._tokens(key, time.monotonic())
        if tokens < 1.0:
            raise RateLimited((1.0 - tokens) / self._per_sec)

    def hit(self, key: str) -> None:
        """Take one token for `key`; raises RateLimited when none is left."""
        now = time.monotonic()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited((1.0 - tokens) / self._per_sec)
        self._buckets[key] = (tokens - 1.0, now)
        if now - self._last_sweep > _IDLE_SWEEP_SECS:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < _IDLE_SWEEP_SECS}


class LoginThrottle:
    """Failed sign-ins, limited per account and per client address against brute force.

    Only failures count, so people who know their password are never slowed down.
    """

    def __init__(self, per_account: RateLimiter, per_address: RateLimiter) -> None:
        self._per_account = per_account
        self._per_address = per_address

    def check(self, username: str, address: str) -> None:
        """Raise RateLimited while either the account or the address is locked out."""
        self._per_account.check(username.lower())
        self._per_address.check(address)

    def failed(self, username: str, address: str) -> None:
        for limiter, key in ((self._per_account, username.lower()), (self._per_address, address)):
            with contextlib.suppress(RateLimited):
                limiter.hit(key)
