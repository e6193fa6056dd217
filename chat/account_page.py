"""`/account`: the signed-in user's own page: a new password, and their sessions."""

import math
from typing import Annotated

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import RedirectResponse, Response

from chat import signins
from chat.deps import ACCESS_COOKIE, Authenticated, ServicesDep, authenticate_token, client_address
from chat.errors import RateLimited
from chat.fields import PASSWORD_MAX_CHARS
from chat.pages import NO_CSRF, CsrfField, _csrf_ok, _render, _to_login, shell
from chat.security import HashingBusy
from chat.services import Services

router = APIRouter(include_in_schema=False)

PasswordField = Annotated[str, Form(max_length=PASSWORD_MAX_CHARS)]


async def _signed_in(request: Request, services: Services) -> Authenticated | None:
    return await authenticate_token(services, request.cookies.get(ACCESS_COOKIE))


async def _page(
    request: Request,
    services: Services,
    me: Authenticated,
    status_code: int = 200,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    async with services.sessions() as db:
        rows = await signins.live_of(db, me.user, services.session_life)
    sessions = [(row, row.id == me.claims.session_id) for row in rows]
    return _render(
        request,
        "account.html",
        status_code,
        user=me.user,
        shell=await shell(services, me.user),
        sessions=sessions,
        error=error,
        notice=notice,
    )


@router.get("/account")
async def account(request: Request, services: ServicesDep, changed: str = "") -> Response:
    me = await _signed_in(request, services)
    if me is None:
        return _to_login(request)
    notice = "Password changed; your other sessions are signed out." if changed else None
    return await _page(request, services, me, notice=notice)


@router.post("/account/password")
async def change_password(
    request: Request,
    services: ServicesDep,
    current_password: PasswordField,
    new_password: PasswordField,
    csrf: CsrfField = NO_CSRF,
) -> Response:
    me = await _signed_in(request, services)
    if me is None:
        return _to_login(request)
    if not _csrf_ok(request, csrf):
        return await _page(request, services, me, 403, "Your form expired; please try again.")
    try:
        problem = await services.change_password(
            me.user, current_password, new_password, client_address(request), me.claims.session_id
        )
    except RateLimited as exc:
        error = f"Too many wrong passwords; try again in {math.ceil(exc.retry_after_secs)} s."
        return await _page(request, services, me, 429, error)
    except HashingBusy:
        error = "The server is busy; please try again in a moment."
        return await _page(request, services, me, 503, error)
    if problem is not None:
        return await _page(request, services, me, 400, problem)
    return RedirectResponse("/account?changed=1", status.HTTP_303_SEE_OTHER)


@router.post("/account/sessions/end")
async def end_sessions(
    request: Request,
    services: ServicesDep,
    session_id: Annotated[str, Form(max_length=64)] = "",
    csrf: CsrfField = NO_CSRF,
) -> Response:
    """End one session (`session_id`), or, without one, every session but this one."""
    me = await _signed_in(request, services)
    if me is None:
        return _to_login(request)
    if not _csrf_ok(request, csrf):
        return await _page(request, services, me, 403, "Your form expired; please try again.")
    current = me.claims.session_id
    if session_id:
        await services.end_sessions(me.user.id, [session_id])
    else:
        await services.end_sessions(me.user.id, keep=current)
    target = "/login" if session_id == current else "/account"
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)
