"""Accounts and access tokens."""

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from chat import accounts, signins
from chat.deps import (
    RequestTokenDep,
    ServicesDep,
    SessionDep,
    authenticate_token,
    client_address,
    too_many_requests,
)
from chat.errors import RateLimited, RegistrationRefused, UsernameTaken
from chat.fields import SIGN_IN_RULE, is_oversized_sign_in
from chat.models import User
from chat.routes import BAD_BODY, STORAGE_FAILED, Responses
from chat.schemas import ErrorOut, RegisterIn, TokenOut, UserOut
from chat.security import HashingBusy, create_access_token
from chat.services import Services

router = APIRouter(prefix="/api/auth", tags=["auth"])

WRONG_CREDENTIALS = "Incorrect username or password"
# Ours are 43; anything much longer is not one, and is not hashed.
REFRESH_TOKEN_MAX_CHARS = 128
HASHING_BUSY: Responses = {
    503: {
        "description": "Too many passwords waiting to be hashed; see Retry-After",
        "model": ErrorOut,
    }
}


def hashing_busy(exc: HashingBusy) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "the server is busy, try again",
        headers={"Retry-After": str(math.ceil(exc.retry_after_secs))},
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses={
        **BAD_BODY,
        **HASHING_BUSY,
        **STORAGE_FAILED,
        403: {
            "description": "Registration is closed, or needs an invite and got none usable",
            "model": ErrorOut,
        },
        409: {"description": "Username taken", "model": ErrorOut},
        429: {"description": "Too many registrations; see Retry-After", "model": ErrorOut},
    },
)
async def register(
    request: Request, body: RegisterIn, session: SessionDep, services: ServicesDep
) -> UserOut:
    try:
        await services.admit_registration(client_address(request))
        user = await accounts.register(
            session,
            body.username,
            body.password,
            services.hasher,
            registration=services.settings.registration,
            invite=body.invite or "",
        )
    except RateLimited as exc:
        raise too_many_requests(exc) from None
    except RegistrationRefused as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except HashingBusy as exc:
        raise hashing_busy(exc) from None
    except UsernameTaken as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    services.registered(user.username, "API")
    return UserOut(id=user.id, username=user.username, is_admin=user.is_admin)


@router.post(
    "/token",
    response_model=TokenOut,
    responses={
        **BAD_BODY,
        **HASHING_BUSY,
        401: {"description": WRONG_CREDENTIALS, "model": ErrorOut},
        429: {"description": "Too many failed sign-ins; see Retry-After", "model": ErrorOut},
    },
)
async def token(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    services: ServicesDep,
) -> TokenOut:
    if is_oversized_sign_in(form.username, form.password):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, SIGN_IN_RULE)
    try:
        user = await accounts.authenticate(
            session,
            form.username,
            form.password,
            services.login_throttle,
            client_address(request),
            services.hasher,
        )
    except RateLimited as exc:
        raise too_many_requests(exc) from None
    except HashingBusy as exc:
        raise hashing_busy(exc) from None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, WRONG_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"}
        )
    row, refresh = await signins.start(
        session, user, signins.API, request.headers.get("user-agent")
    )
    assert refresh is not None
    return _token_pair(services, user, row.id, refresh)


def _token_pair(services: Services, user: User, session_id: str, refresh: str) -> TokenOut:
    return TokenOut(
        access_token=create_access_token(
            user.id, user.token_key, services.signing_key, services.token_ttl, session_id
        ),
        expires_in=int(services.token_ttl.total_seconds()),
        refresh_token=refresh,
        refresh_expires_in=int(services.session_life.total_seconds()),
    )


@router.post(
    "/refresh",
    response_model=TokenOut,
    responses={**BAD_BODY, 401: {"description": "Invalid refresh token", "model": ErrorOut}},
)
async def refresh(
    refresh_token: Annotated[str, Form(max_length=REFRESH_TOKEN_MAX_CHARS)],
    services: ServicesDep,
) -> TokenOut:
    """A new token pair for a refresh token, which is retired. A retired refresh token
    presented again ends its whole session: 401, and every token of it is refused."""
    try:
        async with services.sessions() as db:
            user, row, new = await signins.rotate(db, refresh_token, services.session_life)
    except signins.RefreshRefused as exc:
        if exc.ended is not None:
            await services.sessions_ended([exc.ended])
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Invalid refresh token",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    return _token_pair(services, user, row.id, new)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={401: {"description": "No valid token"}, **STORAGE_FAILED},
)
async def logout(token: RequestTokenDep, services: ServicesDep) -> None:
    """End this token's session: its tokens are refused from now on, and its open sockets
    are closed (1008). 503 when that cannot be stored: the session goes on; try again."""
    found = await authenticate_token(services, token)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Invalid or expired token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    await services.end_sessions(found.user.id, [found.claims.session_id])
