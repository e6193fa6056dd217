"""Request dependencies: the services, a database session, and who is asking."""

import functools
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, NamedTuple

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from chat import signins
from chat.errors import RateLimited
from chat.models import SignIn, User
from chat.security import (
    InvalidToken,
    TokenClaims,
    csrf_tokens_match,
    decode_access_token,
    token_keys_match,
)
from chat.services import Services, SignInRead

ACCESS_COOKIE = "access_token"
CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_bearer = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def get_services(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


class Authenticated(NamedTuple):
    user: User
    claims: TokenClaims
    session: signins.LiveSession


async def authenticate_token(
    services: Services, token: str | None, renewable: bool = False, shared: bool = False
) -> Authenticated | None:
    """Who a valid access token names, its claims and its live session; None for any refused
    token. `renewable` also accepts an expired token of a live browser session: the
    server renews those (a browser's cookie, never a bearer token). `shared`: the account
    and session are read once for the askers of the moment with the same session, each
    one's read starting after it asked (a reconnect storm's sockets of one sign-in)."""
    if not token:
        return None
    try:
        claims = decode_access_token(token, services.signing_key, verify_exp=not renewable)
    except InvalidToken:
        return None
    key = (claims.user_id, claims.session_id, claims.token_key)
    read = functools.partial(_read_sign_in, services, *key)
    found = await (services.sign_in_reads.read(key, read) if shared else read())
    if found is None:
        return None
    user, live = found
    if live.kind != signins.BROWSER and claims.expires_at <= datetime.now(UTC):
        return None
    return Authenticated(user, claims, live)


async def _read_sign_in(
    services: Services, user_id: int, session_id: str, token_key: str
) -> SignInRead:
    """The account and its live session, counted as used now, if a token of theirs with
    `token_key` is good; else None."""
    # The account and the session in one statement: a storm's sockets read them by the
    # thousand, and each statement is several round trips to SQLite's thread.
    query = (
        select(User, SignIn).outerjoin(SignIn, SignIn.id == session_id).where(User.id == user_id)
    )
    async with services.sessions() as session:
        found = (await session.execute(query)).first()
        if found is None:
            return None
        user, row = found
        # Deactivation rotates the key as well; the flag also refuses a token issued with the
        # new key by any door.
        if not user.is_active or not token_keys_match(user.token_key, token_key):
            return None
        live = await signins.use_row(session, row, user, services.session_life)
    return None if live is None else (user, live)


async def user_for_token(services: Services, token: str | None) -> User | None:
    found = await authenticate_token(services, token)
    return None if found is None else found[0]


def _unauthorized(detail: str = "Not authenticated") -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def request_token(request: Request, bearer: Annotated[str | None, Depends(_bearer)]) -> str:
    """The request's access token: a bearer header, or the session cookie (CSRF-checked)."""
    token = bearer
    if token is None:
        token = request.cookies.get(ACCESS_COOKIE)
        # A cookie rides along on cross-site requests too; a header it cannot set proves
        # the request came from our own pages.
        if token and request.method not in SAFE_METHODS:
            given = request.headers.get(CSRF_HEADER)
            if not csrf_tokens_match(request.cookies.get(CSRF_COOKIE), given):
                raise HTTPException(status.HTTP_403_FORBIDDEN, "CSRF token missing or wrong")
    if not token:
        raise _unauthorized()
    return token


RequestTokenDep = Annotated[str, Depends(request_token)]


async def current_user(services: ServicesDep, token: RequestTokenDep) -> User:
    user = await user_for_token(services, token)
    if user is None:
        raise _unauthorized("Invalid or expired token")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def current_sign_in(services: ServicesDep, token: RequestTokenDep) -> Authenticated:
    found = await authenticate_token(services, token)
    if found is None:
        raise _unauthorized("Invalid or expired token")
    return found


CurrentSignIn = Annotated[Authenticated, Depends(current_sign_in)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Admins only")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


def client_address(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "unknown"


def too_many_requests(exc: RateLimited) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        str(exc),
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_secs)))},
    )
