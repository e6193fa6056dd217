"""The browser pages: server-rendered forms and the shells of the live views."""

import math
import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chat import accounts, attention, signins, user_admin
from chat.access import Action
from chat.conversations import RoomView
from chat.db import PROJECT_DIR
from chat.deps import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    ServicesDep,
    SessionDep,
    authenticate_token,
    client_address,
    user_for_token,
)
from chat.errors import (
    Forbidden,
    LastActiveAdmin,
    RateLimited,
    RegistrationRefused,
    RoomExists,
    RoomNotFound,
    RoomQuotaReached,
    UsernameTaken,
    UserNotFound,
)
from chat.fields import (
    BODY_MAX_CHARS,
    COMMON_PASSWORD_RULE,
    DM_OTHERS_MAX,
    INVITE_CODE_MAX_CHARS,
    PASSWORD_MAX_CHARS,
    PASSWORD_MIN_CHARS,
    PASSWORD_RULE,
    RESERVED_ROOM_NAME_RULE,
    ROOM_NAME_PATTERN,
    ROOM_NAME_RULE,
    SIGN_IN_RULE,
    TOPIC_MAX_CHARS,
    TOPIC_RULE,
    USERNAME_MAX_CHARS,
    USERNAME_MIN_CHARS,
    USERNAME_PASSWORD_RULE,
    USERNAME_PATTERN,
    USERNAME_RULE,
    is_oversized_sign_in,
    is_reserved_room_name,
    is_valid_room_name,
    is_valid_username,
    is_valid_username_search,
    password_problem,
)
from chat.models import User
from chat.renewal import browser_token, set_access_cookie
from chat.rooms import ROOMS_DEFAULT_LIMIT
from chat.security import HashingBusy, csrf_tokens_match, new_csrf_token
from chat.services import Services
from chat.user_admin import USERS_DEFAULT_LIMIT

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=PROJECT_DIR / "templates")
# The forms show the server's own rules before they are sent, and let the browser check them.
templates.env.globals["rules"] = {
    "username": USERNAME_RULE,
    "username_pattern": USERNAME_PATTERN,
    "username_min": USERNAME_MIN_CHARS,
    "username_max": USERNAME_MAX_CHARS,
    "password": PASSWORD_RULE,
    "password_min": PASSWORD_MIN_CHARS,
    "password_max": PASSWORD_MAX_CHARS,
    "password_not_username": USERNAME_PASSWORD_RULE,
    "password_not_common": COMMON_PASSWORD_RULE,
    "room_name": ROOM_NAME_RULE,
    "room_name_pattern": ROOM_NAME_PATTERN,
    "room_name_reserved": RESERVED_ROOM_NAME_RULE,
    "topic": TOPIC_RULE,
    "topic_max": TOPIC_MAX_CHARS,
    "dm_others_max": DM_OTHERS_MAX,
    "body_max": BODY_MAX_CHARS,
    "invite_max": INVITE_CODE_MAX_CHARS,
}

FormField = Annotated[str, Form()]
CsrfField = Annotated[str, Form(alias="csrf_token")]
# A form without the field at all gets the CSRF refusal (403) too, not a 422.
NO_CSRF = ""
CREATABLE_KINDS = ("public", "private")
# How many DMs the rooms page lists, the newest first.
DMS_SHOWN = 200
# How many of the user's rooms, and of their DMs, the sidebar lists.
SIDEBAR_SHOWN = 200
# Past any real list of users; keeps a page's offset within the database's integers.
MAX_OFFSET = 2**31 - 1


def _render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    csrf = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
    services: Services = request.app.state.services
    base = {"csrf_token": csrf, "registration": services.settings.registration}
    response = templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status_code
    )
    if request.cookies.get(CSRF_COOKIE) != csrf:
        _set_csrf_cookie(request, response, csrf)
    return response


async def shell(services: Services, user: User) -> dict[str, Any]:
    """What the app shell's sidebar lists: the user's rooms and DMs with their counts (kept
    live by static/shell.js over `/ws/me`)."""
    rooms = await services.conversations.list_joined(user, SIDEBAR_SHOWN)
    dms = await services.conversations.list_dms(user, SIDEBAR_SHOWN)
    return {
        "rooms": rooms,
        "dms": sorted(dms, key=lambda dm: [name.lower() for name in dm.others]),
    }


def _set_csrf_cookie(request: Request, response: Response, csrf: str) -> None:
    services: Services = request.app.state.services
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        httponly=True,
        samesite="lax",
        secure=services.settings.cookie_secure,
        path="/",
    )


def _csrf_ok(request: Request, given: str) -> bool:
    return csrf_tokens_match(request.cookies.get(CSRF_COOKIE), given)


def _csrf_refused(request: Request, template: str, **context: Any) -> Response:
    return _render(
        request,
        template,
        status.HTTP_403_FORBIDDEN,
        error="Your form expired; please try again.",
        **context,
    )


async def _page_user(request: Request, services: Services) -> User | None:
    return await user_for_token(services, request.cookies.get(ACCESS_COOKIE))


async def error_page(request: Request, status_code: int, heading: str, text: str) -> Response:
    """The page of an HTML error (`chat.error_pages`), with the header of whoever is signed in."""
    user = None
    if status_code < 500:
        try:
            user = await _page_user(request, request.app.state.services)
        except Exception:  # the error page shows even with the database away
            user = None
    return _render(
        request, "error.html", status_code, user=user, code=status_code, heading=heading, text=text
    )


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={request.url.path}", status.HTTP_303_SEE_OTHER)


def _safe_next(target: str) -> str:
    # Only our own paths: "//evil.example" and "https://..." would leave the site.
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/rooms"


async def _signed_in(
    request: Request, services: Services, db: AsyncSession, user: User, target: str
) -> Response:
    """Start a browser session: its cookie is kept for the session's life and the access
    token in it renewed by `chat.renewal`. `db` is the request's own database session: a
    second one per sign-in could leave a burst of them waiting for each other's."""
    row, _ = await signins.start(db, user, signins.BROWSER, request.headers.get("user-agent"))
    response = RedirectResponse(_safe_next(target), status.HTTP_303_SEE_OTHER)
    set_access_cookie(response, services, browser_token(services, user.id, user.token_key, row.id))
    # A new CSRF token with the new session: one planted before sign-in (by a script on
    # a sibling subdomain, say) is worthless after it.
    _set_csrf_cookie(request, response, new_csrf_token())
    return response


@router.get("/docs")
async def api_docs(request: Request) -> Response:
    """Swagger UI from our own static files, under the same CSP as every page."""
    return templates.TemplateResponse(
        request, "docs.html", {"openapi_url": request.app.openapi_url}
    )


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/rooms", status.HTTP_303_SEE_OTHER)


@router.get("/register")
async def register_form(
    request: Request, services: ServicesDep, session: SessionDep, invite: str = ""
) -> Response:
    return await _register_page(request, services, session, invite=invite)


async def _register_page(
    request: Request,
    services: Services,
    session: AsyncSession,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """The form, with an invite field unless registration is open; when it is closed and no
    invite came along, a page that says so instead. The first account is always let in."""
    registration = services.settings.registration
    first_account = not await accounts.has_accounts(session)
    if registration == "closed" and not context.get("invite") and not first_account:
        return _render(request, "register_closed.html", status.HTTP_403_FORBIDDEN)
    return _render(
        request,
        "register.html",
        status_code,
        first_account=first_account,
        ask_invite=registration != "open",
        invite_required=registration != "open" and not first_account,
        **context,
    )


@router.post("/register")
async def register(
    request: Request,
    services: ServicesDep,
    session: SessionDep,
    username: FormField,
    password: FormField,
    csrf: CsrfField = NO_CSRF,
    invite: Annotated[str, Form()] = "",
) -> Response:
    async def again(status_code: int, error: str) -> Response:
        return await _register_page(
            request, services, session, status_code, error=error, username=username, invite=invite
        )

    if not _csrf_ok(request, csrf):
        return await again(status.HTTP_403_FORBIDDEN, "Your form expired; please try again.")
    error = None
    if not is_valid_username(username):
        error = f"Usernames are {USERNAME_RULE}."
    else:
        error = password_problem(username, password)
    if error:
        return await again(status.HTTP_400_BAD_REQUEST, error)
    try:
        await services.admit_registration(client_address(request))
        user = await accounts.register(
            session,
            username,
            password,
            services.hasher,
            registration=services.settings.registration,
            invite=invite,
        )
    except RateLimited as exc:
        error = f"Too many registrations; try again in {math.ceil(exc.retry_after_secs)} s."
        return await again(status.HTTP_429_TOO_MANY_REQUESTS, error)
    except HashingBusy:
        error = "The server is busy; please try again in a moment."
        return await again(status.HTTP_503_SERVICE_UNAVAILABLE, error)
    except RegistrationRefused as exc:
        return await again(status.HTTP_403_FORBIDDEN, _sentence(str(exc)))
    except UsernameTaken:
        error = "That username is taken, or looks like one that is."
        return await again(status.HTTP_409_CONFLICT, error)
    services.registered(user.username, "register page")
    return await _signed_in(request, services, session, user, "/rooms")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


@router.get("/login")
async def login_form(request: Request, next: str = "/rooms") -> Response:
    return _render(request, "login.html", next=_safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    services: ServicesDep,
    session: SessionDep,
    username: FormField,
    password: FormField,
    csrf: CsrfField = NO_CSRF,
    next: Annotated[str, Form()] = "/rooms",
) -> Response:
    if not _csrf_ok(request, csrf):
        return _csrf_refused(request, "login.html", username=username, next=_safe_next(next))
    if is_oversized_sign_in(username, password):
        return _render(
            request,
            "login.html",
            status.HTTP_400_BAD_REQUEST,
            error=f"Sign-in refused: {SIGN_IN_RULE}.",
            next=_safe_next(next),
        )
    try:
        user = await accounts.authenticate(
            session,
            username,
            password,
            services.login_throttle,
            client_address(request),
            services.hasher,
        )
    except HashingBusy:
        return _render(
            request,
            "login.html",
            status.HTTP_503_SERVICE_UNAVAILABLE,
            error="The server is busy; please try again in a moment.",
            username=username,
            next=_safe_next(next),
        )
    except RateLimited as exc:
        return _render(
            request,
            "login.html",
            status.HTTP_429_TOO_MANY_REQUESTS,
            error=f"Too many failed sign-ins; try again in {math.ceil(exc.retry_after_secs)} s.",
            username=username,
            next=_safe_next(next),
        )
    if user is None:
        return _render(
            request,
            "login.html",
            status.HTTP_401_UNAUTHORIZED,
            error="Incorrect username or password.",
            username=username,
            next=_safe_next(next),
        )
    return await _signed_in(request, services, session, user, next)


@router.post("/logout")
async def logout(request: Request, services: ServicesDep, csrf: CsrfField = NO_CSRF) -> Response:
    if not _csrf_ok(request, csrf):
        return _csrf_refused(request, "login.html", next="/rooms")
    found = await authenticate_token(services, request.cookies.get(ACCESS_COOKIE), renewable=True)
    if found is not None:
        await services.end_sessions(found.user.id, [found.claims.session_id])
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(ACCESS_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/rooms")
async def rooms_page(request: Request, services: ServicesDep, after: str = "") -> Response:
    user = await _page_user(request, services)
    if user is None:
        return _to_login(request)
    return await _rooms(request, services, user, after=after)


async def _rooms(
    request: Request,
    services: Services,
    user: User,
    status_code: int = 200,
    error: str | None = None,
    name: str = "",
    after: str = "",
    kind: str = "public",
    topic: str = "",
    dm_error: str | None = None,
    dm_users: str = "",
) -> Response:
    """The page of rooms after the name `after`, with a link to the next page if any, and
    the caller's DMs, each named by its other members."""
    after = after if is_valid_room_name(after) else ""
    rooms, next_after = await _listed_rooms(services, user, after)
    dms = await services.conversations.list_dms(user, DMS_SHOWN)
    return _render(
        request,
        "rooms.html",
        status_code,
        user=user,
        shell=await shell(services, user),
        rooms=rooms,
        dms=sorted(dms, key=lambda dm: [name.lower() for name in dm.others]),
        error=error,
        name=name,
        kind=kind if kind in CREATABLE_KINDS else "public",
        topic=topic,
        dm_error=dm_error,
        dm_users=dm_users,
        next_after=next_after,
    )


async def _listed_rooms(
    services: Services, user: User, after: str
) -> tuple[list[RoomView], str | None]:
    """A page of the public and private rooms after the name `after` (DMs have a list of
    their own), and the name the next page starts after, if there is one."""
    found: list[RoomView] = []
    cursor = after
    while True:
        batch = await services.conversations.list_rooms(user, cursor, ROOMS_DEFAULT_LIMIT + 1)
        found.extend(room for room in batch if room.kind != "dm")
        if len(found) > ROOMS_DEFAULT_LIMIT or len(batch) <= ROOMS_DEFAULT_LIMIT:
            break
        # A page of mostly DMs: read on, so that a page of rooms is never short.
        cursor = batch[-1].name
    if len(found) > ROOMS_DEFAULT_LIMIT:
        return found[:ROOMS_DEFAULT_LIMIT], found[ROOMS_DEFAULT_LIMIT - 1].name
    return found, None


@router.post("/rooms")
async def create_room(
    request: Request,
    services: ServicesDep,
    name: FormField,
    csrf: CsrfField = NO_CSRF,
    kind: Annotated[str, Form()] = "public",
    topic: Annotated[str, Form()] = "",
) -> Response:
    user = await _page_user(request, services)
    if user is None:
        return _to_login(request)

    async def again(status_code: int, error: str) -> Response:
        return await _rooms(
            request, services, user, status_code, error, name, kind=kind, topic=topic
        )

    if not _csrf_ok(request, csrf):
        return await again(403, "Your form expired; try again.")
    if not is_valid_room_name(name):
        return await again(400, f"Room names are {ROOM_NAME_RULE}.")
    if is_reserved_room_name(name):
        # As `POST /api/rooms`: only the server names rooms that pass for DMs.
        return await again(400, _sentence(RESERVED_ROOM_NAME_RULE))
    if kind not in CREATABLE_KINDS:
        return await again(400, "A room is either public or private.")
    topic = topic.strip()
    if len(topic) > TOPIC_MAX_CHARS or "\x00" in topic:
        return await again(400, f"Topics are {TOPIC_RULE}.")
    try:
        await services.conversations.create(user, name, kind, topic)
    except RoomExists:
        return await again(409, "That room exists already.")
    except RoomQuotaReached as exc:
        return await again(403, f"Sorry: {exc}.")
    except RateLimited as exc:
        return await again(
            429, f"Too many new rooms; try again in {math.ceil(exc.retry_after_secs)} s."
        )
    return RedirectResponse(f"/rooms/{name}", status.HTTP_303_SEE_OTHER)


@router.post("/dms")
async def open_dm(
    request: Request,
    services: ServicesDep,
    session: SessionDep,
    users: Annotated[str, Form()] = "",
    csrf: CsrfField = NO_CSRF,
) -> Response:
    """The "New message" form: opens the DM with these people (made the first time) and
    goes to it."""
    user = await _page_user(request, services)
    if user is None:
        return _to_login(request)

    async def again(status_code: int, error: str) -> Response:
        return await _rooms(request, services, user, status_code, dm_error=error, dm_users=users)

    if not _csrf_ok(request, csrf):
        return await again(403, "Your form expired; try again.")
    # One name per word; commas and @ are what people type around names.
    words = (word.lstrip("@") for word in re.split(r"[\s,]+", users))
    named = list(dict.fromkeys(word for word in words if word))
    others = [word for word in named if word.lower() != user.username_key]
    if not others:
        return await again(400, "Name at least one other person.")
    if len(others) > DM_OTHERS_MAX:
        return await again(400, f"A direct conversation has at most {DM_OTHERS_MAX} other people.")
    missing = set(await _unknown_users(session, [w for w in others if is_valid_username(w)]))
    unknown = [w for w in others if w in missing or not is_valid_username(w)]
    if unknown:
        return await again(404, f"No such user: {', '.join(unknown)}.")
    try:
        view, _ = await services.conversations.open_dm(user, others)
    except UserNotFound:
        # Gone between the check and now.
        return await again(404, "No such user.")
    except RateLimited as exc:
        error = f"Too many new conversations; try again in {math.ceil(exc.retry_after_secs)} s."
        return await again(429, error)
    return RedirectResponse(f"/rooms/{view.name}", status.HTTP_303_SEE_OTHER)


async def _unknown_users(session: AsyncSession, usernames: list[str]) -> list[str]:
    """Those of the names that no account has, as they were typed."""
    if not usernames:
        return []
    keys = {name.lower() for name in usernames}
    found = set(await session.scalars(select(User.username_key).where(User.username_key.in_(keys))))
    return [name for name in usernames if name.lower() not in found]


@router.get("/rooms/{name}")
async def room_page(request: Request, services: ServicesDep, name: str) -> Response:
    user = await _page_user(request, services)
    if user is None:
        return _to_login(request)
    try:
        await services.conversations.require(user, name, Action.READ)
        view = await services.conversations.view(user, name)
    except RoomNotFound:
        return _render(request, "not_found.html", 404, user=user, what="room")
    except Forbidden as exc:
        return _render(
            request,
            "forbidden.html",
            403,
            user=user,
            heading="You may not enter this room",
            reason=_sentence(exc.reason),
        )
    async with services.sessions() as db:
        read_up_to = await attention.marker_of(db, user.id, name)
    return _render(
        request,
        "room.html",
        user=user,
        room=name,
        view=view,
        read_up_to=read_up_to,
        shell=await shell(services, user),
        edit_window_minutes=services.settings.edit_window_minutes,
    )


@router.get("/admin")
async def admin_page(request: Request, services: ServicesDep) -> Response:
    user = await _page_user(request, services)
    if user is None:
        return _to_login(request)
    if not user.is_admin:
        return _render(request, "forbidden.html", 403, user=user)
    return _render(request, "admin.html", user=user)


# What each button of the users page asks for: (is_admin, is_active).
USER_ACTIONS: dict[str, tuple[bool | None, bool | None]] = {
    "deactivate": (None, False),
    "reactivate": (None, True),
    "promote": (True, None),
    "demote": (False, None),
}


def _page_offset(raw: str) -> int:
    """A page's offset as a query or form gives it: digits, or else the first page."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_OFFSET))):
        return 0
    return min(int(raw), MAX_OFFSET)


@router.get("/admin/users")
async def admin_users_page(
    request: Request, services: ServicesDep, session: SessionDep, q: str = "", offset: str = "0"
) -> Response:
    user = await _page_user(request, services)
    if user is None:
        return _to_login(request)
    if not user.is_admin:
        return _render(request, "forbidden.html", 403, user=user)
    return await _admin_users(request, session, user, q, offset)


async def _admin_users(
    request: Request,
    session: AsyncSession,
    user: User,
    q: str,
    raw_offset: str,
    status_code: int = 200,
    error: str | None = None,
) -> Response:
    """A page of the users whose name holds `q`, from the `raw_offset`th on."""
    q = q if is_valid_username_search(q) else ""
    offset = _page_offset(raw_offset)
    page = await user_admin.search(session, q, USERS_DEFAULT_LIMIT, offset)
    more = offset + USERS_DEFAULT_LIMIT < page.total
    return _render(
        request,
        "admin_users.html",
        status_code,
        user=user,
        users=page.users,
        total=page.total,
        q=q,
        offset=offset,
        error=error,
        previous_offset=max(0, offset - USERS_DEFAULT_LIMIT) if offset else None,
        next_offset=offset + USERS_DEFAULT_LIMIT if more else None,
    )


@router.post("/admin/users/{username}")
async def administer_user(
    request: Request,
    services: ServicesDep,
    session: SessionDep,
    username: str,
    action: FormField,
    q: Annotated[str, Form()] = "",
    offset: Annotated[str, Form()] = "0",
    csrf: CsrfField = NO_CSRF,
) -> Response:
    user = await _page_user(request, services)
    if user is None:
        return _to_login(request)
    if not user.is_admin:
        return _render(request, "forbidden.html", 403, user=user)
    if not _csrf_ok(request, csrf):
        error = "Your form expired; please try again."
        return await _admin_users(request, session, user, q, offset, 403, error)
    if action not in USER_ACTIONS:
        return await _admin_users(request, session, user, q, offset, 400, "Unknown action.")
    try:
        await services.administer_user(username, *USER_ACTIONS[action])
    except UserNotFound:
        return await _admin_users(request, session, user, q, offset, 404, "No such user.")
    except LastActiveAdmin:
        error = "The last active admin can be neither deactivated nor demoted."
        return await _admin_users(request, session, user, q, offset, 409, error)
    back = urlencode({"q": q, "offset": _page_offset(offset)})
    return RedirectResponse(f"/admin/users?{back}", status.HTTP_303_SEE_OTHER)
