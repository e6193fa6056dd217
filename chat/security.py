"""Passwords, access tokens and CSRF tokens: all of the app's cryptography."""

import asyncio
import contextlib
import enum
import hashlib
import heapq
import hmac
import itertools
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, TypeVar

from jose import JWTError, jwt
from passlib.context import CryptContext

T = TypeVar("T")

JWT_ALGORITHM = "HS256"
CSRF_TOKEN_BYTES = 32
TOKEN_ID_BYTES = 12
TOKEN_KEY_BYTES = 16
# The claim naming the account's token key: a token outlives neither its account nor
# a reuse of its account's id.
TOKEN_KEY_CLAIM = "tkey"
# The claim naming the token's session: ending the session ends the token.
SESSION_CLAIM = "sid"
SESSION_ID_BYTES = 16
REFRESH_TOKEN_BYTES = 32

# Argon2id as OWASP recommends (46 MiB, one pass, one lane). One lane keeps a hash on one
# core, so that the hashing threads (cores - 1) leave a core to the event loop; argon2's
# defaults (4 lanes, 64 MiB, 3 passes) took every core for ~250 ms per hash. Hashes made
# with other parameters still verify, and are renewed at the next sign-in.
ARGON2_MEMORY_KIB = 47104


@cache
def password_context(memory_kib: int) -> CryptContext:
    """Argon2id with `memory_kib` (only test servers use less than ARGON2_MEMORY_KIB)."""
    return CryptContext(
        schemes=["argon2"],
        deprecated="auto",
        argon2__memory_cost=memory_kib,
        argon2__rounds=1,
        argon2__parallelism=1,
    )


_passwords = password_context(ARGON2_MEMORY_KIB)


@cache
def _dummy_hash(memory_kib: int) -> str:
    """Verified when the username is unknown, so that a miss costs as much as a
    wrong password and response times do not reveal which accounts exist."""
    password_hash: str = password_context(memory_kib).hash(secrets.token_urlsafe(16))
    return password_hash


class InvalidToken(Exception):
    """The token is missing, malformed, expired, tampered with or otherwise refused."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    issued_at: datetime
    expires_at: datetime
    # `jti`: names the token, apart from every other of its session.
    token_id: str
    # Must equal the account's `token_key`.
    token_key: str
    # The session the token belongs to; it must be live.
    session_id: str


class HashingBusy(Exception):
    """Too many passwords already wait for the hashing threads; the caller should retry later."""

    retry_after_secs = 2.0


class Priority(enum.IntEnum):
    """Lower runs first: a sign-in waits for no queued registration."""

    SIGN_IN = 0
    REGISTER = 1


class PasswordHasher:
    """Argon2 in a few threads, fed from a priority queue with a bound per priority.

    Argon2 takes ~100 ms of CPU on every core it gets. Run in threads, it stalls no socket;
    run in few threads, a login storm cannot take the event loop's core too. The queue puts
    sign-ins before registrations, and refuses work (HashingBusy) rather than let a flood
    make everybody wait behind it.
    """

    def __init__(self, threads: int, max_waiting: int, memory_kib: int = ARGON2_MEMORY_KIB) -> None:
        self._memory_kib = memory_kib
        self._passwords = password_context(memory_kib)
        self._threads = threads
        self._max_waiting = max_waiting
        self._heap: list[tuple[int, int, Callable[[], Any], _Waiter]] = []
        self._waiting = [0] * len(Priority)
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._closed = False

    async def run(self, priority: Priority, function: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._waiting[priority] >= self._max_waiting:
                raise HashingBusy()
            if not self._workers:
                self._start()
            heapq.heappush(
                self._heap, (priority, next(self._order), function, _Waiter(loop, future))
            )
            self._waiting[priority] += 1
            self._cond.notify()
        return await future

    def _start(self) -> None:
        for i in range(self._threads):
            worker = threading.Thread(target=self._work, name=f"argon2-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if not self._heap:
                    return
                priority, _, function, waiter = heapq.heappop(self._heap)
                self._waiting[priority] -= 1
            if waiter.future.cancelled():
                # The client went away while waiting: spend no CPU on its password.
                continue
            try:
                result = function()
            except Exception as exc:
                waiter.settle(None, exc)
            else:
                waiter.settle(result, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    async def hash(self, password: str) -> str:
        return await self.run(Priority.REGISTER, lambda: self._passwords.hash(password))

    async def verify(self, password: str, password_hash: str | None) -> bool:
        passwords = self._passwords
        if password_hash is None:
            dummy = self._memory_kib
            await self.run(Priority.SIGN_IN, lambda: passwords.verify(password, _dummy_hash(dummy)))
            return False
        return await self.run(Priority.SIGN_IN, lambda: passwords.verify(password, password_hash))

    async def verify_and_update(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """Whether the password matches, and a new hash to store when the old one was made
        with parameters other than today's."""
        passwords = self._passwords
        return await self.run(
            Priority.SIGN_IN, lambda: passwords.verify_and_update(password, password_hash)
        )


@dataclass(frozen=True, slots=True)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: "asyncio.Future[Any]"

    def settle(self, result: object, error: BaseException | None) -> None:
        def settle_on_loop() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        # A loop that has closed meanwhile has nobody left waiting.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(settle_on_loop)


HASHING_THREADS = max(1, (os.cpu_count() or 2) - 1)
# Waiting hashes per priority before a server refuses more with 503.
DEFAULT_HASH_QUEUE_MAX = 64
# For the command line, which runs no server.
_default_hasher = PasswordHasher(HASHING_THREADS, DEFAULT_HASH_QUEUE_MAX)


async def hash_password(password: str) -> str:
    return await _default_hasher.hash(password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    return await _default_hasher.verify(password, password_hash)


def new_token_key() -> str:
    return secrets.token_urlsafe(TOKEN_KEY_BYTES)


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def refresh_token_hash(token: str) -> str:
    """Refresh tokens are stored as this: a leaked table holds no usable token. A fast hash
    is enough for 256 random bits."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_access_token(
    user_id: int, token_key: str, key: str, ttl: timedelta, session_id: str
) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        TOKEN_KEY_CLAIM: token_key,
        SESSION_CLAIM: session_id,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(TOKEN_ID_BYTES),
    }
    token: str = jwt.encode(claims, key, algorithm=JWT_ALGORITHM)
    return token


# Tokens whose signature and claims were checked lately: a reconnect storm presents each
# token by the hundred, and checking a signature again gives the same answer. Only good
# tokens are kept (a refused one raises, which the cache does not keep); time is checked on
# every use.
VERIFIED_TOKENS_KEPT = 4096


def decode_access_token(token: str, key: str, verify_exp: bool = True) -> TokenClaims:
    """The token's claims, or InvalidToken. `verify_exp=False` accepts an expired token
    (signature and all else checked): a browser session's cookie is renewed from it."""
    claims = _verified_claims(token, key)
    now = datetime.now(UTC)
    # python-jose's test, to the whole second: expired once `exp` is before now.
    if verify_exp and claims.expires_at < now.replace(microsecond=0):
        raise InvalidToken("Signature has expired.")
    # python-jose checks `exp` but not an `iat` from the future.
    if claims.issued_at > now + timedelta(seconds=30):
        raise InvalidToken("token used before issued")
    return claims


@lru_cache(maxsize=VERIFIED_TOKENS_KEPT)
def _verified_claims(token: str, key: str) -> TokenClaims:
    """The claims of a token signed with `key` and well formed, expired or not."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            # `exp` is checked by the caller, at every use; it is required below.
            options={"require_sub": True, "require_iat": True, "verify_exp": False},
        )
        header = jwt.get_unverified_header(token)
    except JWTError as exc:
        raise InvalidToken(str(exc)) from None
    if header.get("alg") != JWT_ALGORITHM:
        raise InvalidToken("unexpected algorithm")
    if "nbf" in claims:
        # Never issued here; its test would depend on the time, which a kept answer cannot.
        raise InvalidToken("unexpected claim nbf")
    sub, iat, exp = claims.get("sub"), claims.get("iat"), claims.get("exp")
    if not isinstance(sub, str) or not sub.isdigit():
        raise InvalidToken("invalid subject")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        raise InvalidToken("invalid timestamps")
    token_id = claims.get("jti")
    if token_id is not None and (not isinstance(token_id, str) or len(token_id) > 64):
        raise InvalidToken("invalid token id")
    token_key = claims.get(TOKEN_KEY_CLAIM)
    if not isinstance(token_key, str) or not token_key or len(token_key) > 64:
        raise InvalidToken("missing or invalid token key")
    session_id = claims.get(SESSION_CLAIM)
    if not isinstance(session_id, str) or not session_id or len(session_id) > 32:
        raise InvalidToken("missing or invalid session")
    return TokenClaims(
        int(sub),
        datetime.fromtimestamp(iat, UTC),
        datetime.fromtimestamp(exp, UTC),
        token_id or "",
        token_key,
        session_id,
    )


def new_csrf_token() -> str:
    return secrets.token_urlsafe(CSRF_TOKEN_BYTES)


def csrf_tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def token_keys_match(account_key: str, claimed: str) -> bool:
    return hmac.compare_digest(account_key.encode(), claimed.encode())
