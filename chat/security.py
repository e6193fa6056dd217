"""Passwords, access tokens and CSRF tokens: all of the app's cryptography."""

import asyncio
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from jose import JWTError, jwt
from passlib.context import CryptContext

JWT_ALGORITHM = "HS256"
CSRF_TOKEN_BYTES = 32

_passwords = CryptContext(schemes=["argon2"], deprecated="auto")


@cache
def _dummy_hash() -> str:
    """Verified when the username is unknown, so that a miss costs as much as a
    wrong password and response times do not reveal which accounts exist."""
    return _passwords.hash(secrets.token_urlsafe(16))


class InvalidToken(Exception):
    """The token is missing, malformed, expired, tampered with or otherwise refused."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    issued_at: datetime
    expires_at: datetime


async def hash_password(password: str) -> str:
    # Argon2 takes tens of milliseconds of CPU; in a thread it stalls no socket.
    return await asyncio.to_thread(_passwords.hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        await asyncio.to_thread(_passwords.verify, password, _dummy_hash())
        return False
    return await asyncio.to_thread(_passwords.verify, password, password_hash)


def create_access_token(user_id: int, key: str, ttl: timedelta) -> str:
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "iat": now, "exp": now + ttl}
    return jwt.encode(claims, key, algorithm=JWT_ALGORITHM)


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
    return TokenClaims(int(sub), issued_at, datetime.fromtimestamp(exp, UTC))


def new_csrf_token() -> str:
    return secrets.token_urlsafe(CSRF_TOKEN_BYTES)


def csrf_tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
