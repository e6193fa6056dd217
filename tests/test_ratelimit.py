"""Rate limits: message buckets, and the brute-force throttle on sign-ins."""

import asyncio
from collections.abc import Callable

import pytest

from chat.errors import RateLimited
from chat.ratelimit import (
    LOGIN_MAX_LOCK_SECS,
    MemoryLoginThrottle,
    RateLimiter,
    login_lock_secs,
)
from tests.conftest import PASSWORD, Server


def test_bucket_allows_the_burst_then_refuses_with_retry_after() -> None:
    """A bucket gives `burst` tokens at once, then says how long until the next one."""
    limiter = RateLimiter(burst=3, per_sec=0.5)
    for _ in range(3):
        limiter.hit("alice")
    with pytest.raises(RateLimited) as refused:
        limiter.hit("alice")
    assert 0 < refused.value.retry_after_secs <= 2.0
    limiter.hit("bob")  # Each key has its own bucket.


def test_check_does_not_take_a_token() -> None:
    """`check` looks without spending, so checking alone never locks anyone out."""
    limiter = RateLimiter(burst=1, per_sec=0.01)
    for _ in range(5):
        limiter.check("alice")
    limiter.hit("alice")
    with pytest.raises(RateLimited):
        limiter.check("alice")


def test_login_throttle_counts_failures_per_account_and_address() -> None:
    """Failures lock the account out for their address; the account stays open to other
    addresses, and other accounts to this one."""

    async def run() -> None:
        throttle = MemoryLoginThrottle(2, 1.0, 100, 1.0)
        await throttle.failed("alice", "10.0.0.1")
        await throttle.failed("alice", "10.0.0.1")
        with pytest.raises(RateLimited) as refused:
            await throttle.check("alice", "10.0.0.1")
        assert refused.value.retry_after_secs > 30
        await throttle.check("alice", "10.0.0.3")
        await throttle.check("bob", "10.0.0.1")

    asyncio.run(run())


def test_login_throttle_backs_off_exponentially() -> None:
    """Each failure past the burst doubles the lock-out, up to a limit."""
    assert login_lock_secs(2, 3, 5.0) == 0
    assert login_lock_secs(3, 3, 5.0) == 12
    assert login_lock_secs(4, 3, 5.0) == 24
    assert login_lock_secs(5, 3, 5.0) == 48
    assert login_lock_secs(500, 3, 5.0) == LOGIN_MAX_LOCK_SECS


def test_login_throttle_counts_failures_per_address() -> None:
    """Guessing across many accounts from one address locks that address out."""

    async def run() -> None:
        throttle = MemoryLoginThrottle(100, 1.0, 3, 0.6)
        for name in ("a1", "a2", "a3"):
            await throttle.failed(name, "10.0.0.9")
        with pytest.raises(RateLimited):
            await throttle.check("a4", "10.0.0.9")
        await throttle.check("a4", "10.0.0.8")

    asyncio.run(run())


def test_token_endpoint_throttles_failed_sign_ins(make_server: Callable[..., Server]) -> None:
    """Past the allowed failures the account gets 429 + Retry-After, even with the password."""
    srv = make_server(login_failures_burst=3, login_failures_per_min=1)
    victim, other = srv.register(), srv.register()
    http = srv.client()
    for _ in range(3):
        r = http.post("/api/auth/token", data={"username": victim.username, "password": "wrong!!!"})
        assert r.status_code == 401
    r = http.post("/api/auth/token", data={"username": victim.username, "password": PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    r = http.post("/api/auth/token", data={"username": other.username, "password": PASSWORD})
    assert r.status_code == 200


def test_login_page_throttles_failed_sign_ins(make_server: Callable[..., Server]) -> None:
    """The sign-in form answers 429 with a message once the account is locked out."""
    srv = make_server(login_failures_burst=2, login_failures_per_min=1)
    victim = srv.register()
    http = srv.client()
    csrf = http.get("/login").cookies["csrf_token"]
    form = {"username": victim.username, "password": "wrong!!!", "csrf_token": csrf}
    assert http.post("/login", data=form).status_code == 401
    assert http.post("/login", data=form).status_code == 401
    r = http.post("/login", data={**form, "password": PASSWORD})
    assert r.status_code == 429
    assert "Too many failed sign-ins" in r.text
    assert "access_token" not in r.cookies
