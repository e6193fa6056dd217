"""Invites, which admins hand out so that people may register when registration is not open."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Request, status

from chat import invites
from chat.deps import AdminUser, SessionDep
from chat.errors import InviteNotFound
from chat.models import Invite
from chat.routes import BAD_BODY, STORAGE_FAILED, UNAUTHORIZED, Responses
from chat.schemas import ErrorOut, InviteIn, InviteOut

router = APIRouter(prefix="/api/admin/invites", tags=["admin"])

ADMINS_ONLY: Responses = {403: {"description": "Not an admin", "model": ErrorOut}}
# A change: also refused (403) when signed in by the cookie without the CSRF header.
ADMINS_CHANGE: Responses = {
    403: {
        "description": "Not an admin, or a cookie sign-in without the CSRF header",
        "model": ErrorOut,
    }
}


def _out(request: Request, invite: Invite) -> InviteOut:
    return InviteOut(
        code=invite.code,
        url=str(request.url_for("register_form").include_query_params(invite=invite.code)),
        uses_left=invite.uses_left,
        expires_at=invite.expires_at,
        created_at=invite.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=InviteOut,
    responses={**UNAUTHORIZED, **ADMINS_CHANGE, **BAD_BODY, **STORAGE_FAILED},
)
async def create_invite(
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    body: Annotated[InviteIn | None, Body()] = None,
) -> InviteOut:
    """An invite for `uses` registrations within `expires_in_hours`; no body: 1 use, 7 days."""
    wanted = body or InviteIn()
    invite = await invites.create(
        session, admin, wanted.uses, timedelta(hours=wanted.expires_in_hours)
    )
    return _out(request, invite)


@router.get(
    "",
    response_model=list[InviteOut],
    responses={**UNAUTHORIZED, **ADMINS_ONLY},
)
async def list_invites(request: Request, _admin: AdminUser, session: SessionDep) -> list[InviteOut]:
    """The invites that can still be used, newest first."""
    return [_out(request, invite) for invite in await invites.usable(session)]


@router.delete(
    "/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **UNAUTHORIZED,
        **ADMINS_CHANGE,
        **STORAGE_FAILED,
        404: {"description": "No such invite", "model": ErrorOut},
    },
)
async def revoke_invite(code: str, _admin: AdminUser, session: SessionDep) -> None:
    """The invite can no longer be used."""
    try:
        await invites.revoke(session, code)
    except InviteNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
