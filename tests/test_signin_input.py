"""Sign-in input is checked for length before the throttle and the hasher see it."""

import asyncio
from collections.abc import Callable

import httpx

from chat import ratelimit
from tests.conftest import PASSWORD, Server, unique

# Over any username's length, within the largest body a request may have (64 KiB).
HUGE_NAME_CHARS = 60_000


def test_password_over_4096_bytes_is_a_400_not_a_500(server: Server) -> None:
    """argon2 refuses passwords over 4096 bytes; the server refuses them first, clearly."""
    for password in ("x" * 5000, "é" * 2049):
        r = httpx.post(
            f"{server.url}/api/auth/token",
            data={"username": unique("nobody"), "password": password},
            timeout=30,
        )
        assert r.status_code == 400, r.text
        assert "passwords at most 1024" in r.json()["detail"]


def test_login_form_refuses_an_oversized_password(server: Server) -> None:
    http = server.client()
    csrf = http.get("/login").cookies["csrf_token"]
    form = {"username": unique("nobody"), "password": "x" * 5000, "csrf_token": csrf}
    r = http.post("/login", data=form)
    assert r.status_code == 400
    assert "passwords at most 1024" in r.text


def test_oversized_sign_ins_are_neither_counted_nor_kept(
    make_server: Callable[..., Server],
) -> None:
    """Oversized usernames are refused before the throttle (400; a body over 64 KiB already gets
    413 unread): they cost it no memory and do not use up the address's allowance."""
    srv = make_server(login_address_failures_burst=3, login_address_failures_per_min=1)
    throttle = srv.server.config.app.state.services.login_throttle.inner  # type: ignore[union-attr]
    kept = len(throttle)
    for i in range(10):
        form = {"username": f"{i}" + "a" * HUGE_NAME_CHARS, "password": "wrong guess"}
        r = httpx.post(f"{srv.url}/api/auth/token", data=form, timeout=30)
        assert r.status_code == 400
    form = {"username": "a" * 1_000_000, "password": "wrong guess"}
    assert httpx.post(f"{srv.url}/api/auth/token", data=form, timeout=30).status_code == 413
    assert len(throttle) == kept
    admin = srv.admin
    assert admin is not None
    form = {"username": admin.username, "password": PASSWORD}
    assert httpx.post(f"{srv.url}/api/auth/token", data=form, timeout=30).status_code == 200


def test_limiters_keep_a_bounded_number_of_keys() -> None:
    """However many names or addresses come by, a limiter forgets the least recently used."""
    limiter = ratelimit.RateLimiter(5, 0.01, max_keys=100)
    for i in range(1000):
        limiter.hit(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    throttle = ratelimit.MemoryLoginThrottle(5, 1.0, 50, 1.0, max_keys=100)

    async def fail_many() -> None:
        for i in range(1000):
            await throttle.failed(f"user{i}", f"10.1.{i // 256}.{i % 256}")

    asyncio.run(fail_many())
    assert len(throttle) <= 200
