"""Passwords, access tokens and CSRF tokens: all of the app's cryptography."""

import asyncio
import hmac
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
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

_passwords = CryptContext(schemes=["argon2"], deprecated="auto")


@cache
def _dummy_hash() -> str:
    """Verified when the username is unknown, so that a miss costs as much as a
    wrong password and response times do not reveal which accounts exist."""
    password_hash: str = _passwords.hash(secrets.token_urlsafe(16))
    return password_hash


class InvalidToken(Exception):
    """The token is missing, malformed, expired, tampered with or otherwise refused."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    issued_at: datetime
    expires_at: datetime
    # `jti`: names the token, so that signing out can revoke it alone.
    token_id: str
    # Must equal the account's `token_key`.
    token_key: str


# Argon2 takes ~100 ms of CPU on every core it gets. Run in threads, it stalls no
# socket; run in few threads, a login storm cannot take the event loop's core too.
_hashing = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="argon2")


async def _off_loop(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_hashing, function, *args)


async def hash_password(password: str) -> str:
    return await _off_loop(_passwords.hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        await _off_loop(_passwords.verify, password, _dummy_hash())
        return False
    return await _off_loop(_passwords.verify, password, password_hash)


def new_token_key() -> str:
    return secrets.token_urlsafe(TOKEN_KEY_BYTES)


def create_access_token(user_id: int, token_key: str, key: str, ttl: timedelta) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        TOKEN_KEY_CLAIM: token_key,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(TOKEN_ID_BYTES),
    }
    token: str = jwt.encode(claims, key, algorithm=JWT_ALGORITHM)
    return token


def decode_access_token(token: str, key: str) -> TokenClaims:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            options={"require_sub": True, "require_exp": True, "require_iat": True},
        )
        header = jwt.get_unverified_header(token)
    except JWTError as exc:
        raise InvalidToken(str(exc)) from None
    if header.get("alg") != JWT_ALGORITHM:
        raise InvalidToken("unexpected algorithm")
    sub, iat, exp = claims.get("sub"), claims.get("iat"), claims.get("exp")
    if not isinstance(sub, str) or not sub.isdigit():
        raise InvalidToken("invalid subject")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        raise InvalidToken("invalid timestamps")
    issued_at = datetime.fromtimestamp(iat, UTC)
    # python-jose checks `exp` but not an `iat` from the future.
    if issued_at > datetime.now(UTC) + timedelta(seconds=30):
        raise InvalidToken("token used before issued")
    token_id = claims.get("jti")
    if token_id is not None and (not isinstance(token_id, str) or len(token_id) > 64):
        raise InvalidToken("invalid token id")
    token_key = claims.get(TOKEN_KEY_CLAIM)
    if not isinstance(token_key, str) or not token_key or len(token_key) > 64:
        raise InvalidToken("missing or invalid token key")
    expires_at = datetime.fromtimestamp(exp, UTC)
    return TokenClaims(int(sub), issued_at, expires_at, token_id or "", token_key)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(CSRF_TOKEN_BYTES)


def csrf_tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def token_keys_match(account_key: str, claimed: str) -> bool:
    return hmac.compare_digest(account_key.encode(), claimed.encode())
