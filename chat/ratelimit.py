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
# Keys one in-memory limiter keeps at most; past it the least recently used go first, so
# that no stream of new names or addresses can grow a process's memory without bound.
MAX_KEYS = 100_000


class RateLimiter:
    def __init__(self, burst: int, per_sec: float, max_keys: int = MAX_KEYS) -> None:
        self._burst = float(burst)
        self._per_sec = per_sec
        self._max_keys = max_keys
        # In least-recently-used order: a key is moved to the end each time it is written.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._last_sweep = time.monotonic()

    def __len__(self) -> int:
        return len(self._buckets)

    def _store(self, key: str, value: tuple[float, float]) -> None:
        self._buckets.pop(key, None)
        self._buckets[key] = value
        if len(self._buckets) > self._max_keys:
            del self._buckets[next(iter(self._buckets))]

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
            self._store(key, (tokens, now))
            raise RateLimited((1.0 - tokens) / self._per_sec)
        self._store(key, (tokens - 1.0, now))
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


# A failed sign-in is remembered this long after the last one of its account and address.
LOGIN_FAILURE_MEMORY_SECS = 6 * 3600.0
LOGIN_MAX_LOCK_SECS = 3600.0


def login_lock_secs(failures: int, burst: int, per_min: float) -> float:
    """How long an account is closed to an address after `failures` failures from it: free for
    the first `burst`, then one try per `1/per_min` minutes, doubling with each failure."""
    if failures < burst:
        return 0.0
    return min(LOGIN_MAX_LOCK_SECS, 60.0 / per_min * 2.0 ** min(failures - burst, 30))


class LoginThrottle(Protocol):
    """Failed sign-ins, counted per account and client address with a growing lock-out, and
    per address across accounts.

    Only failures count, and only those of this address lock an account for it: however many
    guesses come from elsewhere, the right password from here is never refused because of them.
    `username_key` is "" for names no account can have.
    """

    async def check(self, username_key: str, address: str) -> None:
        """Raise RateLimited while the account is locked for the address, or the address is."""

    async def failed(self, username_key: str, address: str) -> None: ...

    async def succeeded(self, username_key: str, address: str) -> None: ...


class MemoryLoginThrottle:
    """The counters of one process."""

    def __init__(
        self,
        burst: int,
        per_min: float,
        address_burst: int,
        address_per_min: float,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._burst = burst
        self._per_min = per_min
        self._max_keys = max_keys
        # (account, address) -> (failures, locked until, last failure); least recently used first.
        self._pairs: dict[tuple[str, str], tuple[int, float, float]] = {}
        self._per_address = RateLimiter(address_burst, address_per_min / 60, max_keys)

    def __len__(self) -> int:
        return len(self._pairs) + len(self._per_address)

    async def check(self, username_key: str, address: str) -> None:
        now = time.monotonic()
        pair = self._pairs.get((username_key, address))
        if pair is not None and pair[1] > now:
            raise RateLimited(pair[1] - now)
        self._per_address.check(address)

    async def failed(self, username_key: str, address: str) -> None:
        now = time.monotonic()
        failures, _, last = self._pairs.pop((username_key, address), (0, 0.0, now))
        if now - last > LOGIN_FAILURE_MEMORY_SECS:
            failures = 0
        failures += 1
        until = now + login_lock_secs(failures, self._burst, self._per_min)
        self._pairs[(username_key, address)] = (failures, until, now)
        if len(self._pairs) > self._max_keys:
            del self._pairs[next(iter(self._pairs))]
        with contextlib.suppress(RateLimited):
            self._per_address.hit(address)

    async def succeeded(self, username_key: str, address: str) -> None:
        self._pairs.pop((username_key, address), None)


# KEYS: pair, address bucket; ARGV: address burst, per second -> "0" or seconds to wait.
_LOGIN_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local locked = tonumber(redis.call('HGET', KEYS[1], 'until')) or 0
if locked > now then return tostring(locked - now) end
local burst, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[2], 'tokens', 'stamp')
local tokens = tonumber(b[1]) or burst
local stamp = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - stamp) * rate)
if tokens < 1 then return tostring((1 - tokens) / rate) end
return '0'
"""

# KEYS: pair, address bucket; ARGV: burst, seconds of the first lock, longest lock, memory,
# address burst, address per second.
_LOGIN_FAILED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local burst, base, longest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local failures = redis.call('HINCRBY', KEYS[1], 'n', 1)
if failures >= burst then
  local lock = math.min(longest, base * 2 ^ math.min(failures - burst, 30))
  redis.call('HSET', KEYS[1], 'until', tostring(now + lock))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
local aburst, rate = tonumber(ARGV[5]), tonumber(ARGV[6])
local b = redis.call('HMGET', KEYS[2], 'tokens', 'stamp')
local tokens = tonumber(b[1]) or aburst
local stamp = tonumber(b[2]) or now
tokens = math.max(0, math.min(aburst, tokens + (now - stamp) * rate) - 1)
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[2], math.ceil(aburst / rate) + 1)
return 1
"""


class RedisLoginThrottle:
    """The counters in Redis, shared by every process; while Redis cannot be reached, each
    process counts on its own instead."""

    def __init__(
        self,
        redis: Any,
        namespace: str,
        burst: int,
        per_min: float,
        address_burst: int,
        address_per_min: float,
    ) -> None:
        self._redis = redis
        self._check = redis.register_script(_LOGIN_CHECK)
        self._failed = redis.register_script(_LOGIN_FAILED)
        self._prefix = f"{namespace}:login:"
        self._burst = burst
        self._per_min = per_min
        self._address_burst = address_burst
        self._address_per_sec = address_per_min / 60
        self._local = MemoryLoginThrottle(burst, per_min, address_burst, address_per_min)

    def _keys(self, username_key: str, address: str) -> list[str]:
        # Usernames hold no ':', so the account part ends at the first one.
        return [f"{self._prefix}pair:{username_key}:{address}", f"{self._prefix}addr:{address}"]

    async def check(self, username_key: str, address: str) -> None:
        try:
            wait = await self._check(
                keys=self._keys(username_key, address),
                args=[self._address_burst, self._address_per_sec],
            )
        except Exception as exc:
            log.warning("sign-in throttle of this process only: %s", exc)
            await self._local.check(username_key, address)
            return
        if float(wait) > 0:
            raise RateLimited(float(wait))

    async def failed(self, username_key: str, address: str) -> None:
        try:
            await self._failed(
                keys=self._keys(username_key, address),
                args=[
                    self._burst,
                    60.0 / self._per_min,
                    LOGIN_MAX_LOCK_SECS,
                    int(LOGIN_FAILURE_MEMORY_SECS),
                    self._address_burst,
                    self._address_per_sec,
                ],
            )
        except Exception as exc:
            log.warning("sign-in throttle of this process only: %s", exc)
            await self._local.failed(username_key, address)

    async def succeeded(self, username_key: str, address: str) -> None:
        try:
            await self._redis.delete(self._keys(username_key, address)[0])
        except Exception as exc:
            log.warning("sign-in throttle of this process only: %s", exc)
        await self._local.succeeded(username_key, address)
