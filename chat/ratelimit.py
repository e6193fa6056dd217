"""Token buckets: a burst allowance refilled at a sustained rate, one per key."""

import contextlib
import logging
import time
from typing import Any, Protocol

from chat.errors import RateLimited

log = logging.getLogger(__name__)


class MessageLimiter(Protocol):
    async def acquire(self, key: str) -> None:
        """Take one token for `key`; raises RateLimited when none is left."""


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

    async def acquire(self, key: str) -> None:
        """`hit`, behind the same awaitable interface as the shared limiter's."""
        self.hit(key)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < _IDLE_SWEEP_SECS}


# KEYS: bucket; ARGV: burst, per second -> {1, "0"} or {0, seconds until a token}.
# On Redis's clock, so hosts need not agree on the time.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local burst, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(b[1]) or burst
local stamp = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - stamp) * rate)
local taken = 0
if tokens >= 1 then tokens = tokens - 1 taken = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
if taken == 1 then return {1, '0'} end
return {0, tostring((1 - tokens) / rate)}
"""


class SharedRateLimiter:
    """Token buckets kept in Redis, so a user's limit holds across every process.

    While Redis cannot be reached, each process limits on its own instead.
    """

    def __init__(self, redis: Any, burst: int, per_sec: float, namespace: str) -> None:
        self._take = redis.register_script(_TAKE)
        self._burst = burst
        self._per_sec = per_sec
        self._prefix = f"{namespace}:rate:"
        self._local = RateLimiter(burst, per_sec)

    async def acquire(self, key: str) -> None:
        try:
            taken, wait = await self._take(
                keys=[self._prefix + key], args=[self._burst, self._per_sec]
            )
        except Exception as exc:
            log.warning("rate limit of this process only: %s", exc)
            self._local.hit(key)
            return
        if not int(taken):
            raise RateLimited(float(wait))


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
