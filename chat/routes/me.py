"""The caller's own account: who they are, their password, their sessions."""

from fastapi import APIRouter, HTTPException, Request, status

from chat import signins
from chat.deps import CurrentSignIn, ServicesDep, client_address, too_many_requests
from chat.errors import RateLimited
from chat.routes import BAD_BODY, CSRF_REFUSED, STORAGE_FAILED, UNAUTHORIZED
from chat.routes.auth import HASHING_BUSY, hashing_busy
from chat.schemas import ErrorOut, MeOut, PasswordChangeIn, SessionOut
from chat.security import HashingBusy

router = APIRouter(prefix="/api/me", tags=["me"])


@router.get("", response_model=MeOut, responses=UNAUTHORIZED)
async def me(me: CurrentSignIn) -> MeOut:
    user = me.user
    return MeOut(
        id=user.id, username=user.username, is_admin=user.is_admin, created_at=user.created_at
    )


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **BAD_BODY,
        **UNAUTHORIZED,
        **CSRF_REFUSED,
        **HASHING_BUSY,
        **STORAGE_FAILED,
        400: {"description": "The current password is wrong, or the new one breaks the rules"},
        429: {"description": "Too many wrong passwords; see Retry-After", "model": ErrorOut},
    },
)
async def change_password(
    request: Request, body: PasswordChangeIn, me: CurrentSignIn, services: ServicesDep
) -> None:
    """Set a new password; every other session of the account ends (its sockets close)."""
    try:
        problem = await services.change_password(
            me.user,
            body.current_password,
            body.new_password,
            client_address(request),
            me.claims.session_id,
        )
    except RateLimited as exc:
        raise too_many_requests(exc) from None
    except HashingBusy as exc:
        raise hashing_busy(exc) from None
    if problem is not None:
        # 400, not 401: the caller's token is fine, and a 401 would tell a client to sign
        # in again.
        raise HTTPException(status.HTTP_400_BAD_REQUEST, problem)


@router.get("/sessions", response_model=list[SessionOut], responses=UNAUTHORIZED)
async def sessions(me: CurrentSignIn, services: ServicesDep) -> list[SessionOut]:
    async with services.sessions() as db:
        rows = await signins.live_of(db, me.user, services.session_life)
    return [
        SessionOut(
            id=row.id,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            user_agent=row.user_agent,
            current=row.id == me.claims.session_id,
        )
        for row in rows
    ]


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **UNAUTHORIZED,
        **CSRF_REFUSED,
        **STORAGE_FAILED,
        404: {"description": "No such session of yours", "model": ErrorOut},
    },
)
async def end_session(session_id: str, me: CurrentSignIn, services: ServicesDep) -> None:
    """End one of the caller's sessions (the current one too): its tokens are refused and
    its sockets close (1008)."""
    if not await services.end_sessions(me.user.id, [session_id]):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such session")
