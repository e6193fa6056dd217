"""What admins see and do."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from chat import alerts, history, user_admin
from chat.alerts import ALERTS_DEFAULT_LIMIT, ALERTS_MAX_LIMIT
from chat.deps import AdminUser, ServicesDep, SessionDep
from chat.errors import LastActiveAdmin, UserNotFound
from chat.fields import USERNAME_MAX_CHARS, USERNAME_SEARCH_PATTERN
from chat.history import HISTORY_DEFAULT_MINUTES, HISTORY_MAX_MINUTES
from chat.models import User
from chat.routes import BAD_BODY, UNAUTHORIZED, Responses
from chat.schemas import (
    ActiveUsersOut,
    AdminUserIn,
    AdminUserOut,
    AdminUsersOut,
    AlertsOut,
    ErrorOut,
    StatsHistoryOut,
    StatsPointOut,
)
from chat.user_admin import USERS_DEFAULT_LIMIT, USERS_MAX_LIMIT

router = APIRouter(prefix="/api/admin", tags=["admin"])

ADMINS_ONLY: Responses = {
    **UNAUTHORIZED,
    403: {
        "description": "Not an admin, or a cookie sign-in without the CSRF header",
        "model": ErrorOut,
    },
}


def user_out(user: User) -> AdminUserOut:
    return AdminUserOut(
        id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        is_active=user.is_active,
        created_at=user.created_at,
        last_seen_at=user.last_seen_at,
    )


@router.get("/active-users", response_model=ActiveUsersOut, responses=ADMINS_ONLY)
async def active_users(_admin: AdminUser, services: ServicesDep) -> ActiveUsersOut:
    """Who is in which room, in every room but DMs."""
    snapshot = await services.presence.snapshot()
    return ActiveUsersOut(rooms=await services.conversations.operator_view(snapshot))


@router.get("/alerts", response_model=AlertsOut, responses=ADMINS_ONLY)
async def list_alerts(
    _admin: AdminUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=ALERTS_MAX_LIMIT)] = ALERTS_DEFAULT_LIMIT,
) -> AlertsOut:
    """The latest alerts, newest first: what happened while nobody watched `/admin`."""
    return AlertsOut(alerts=await alerts.recent(session, limit))


@router.get("/stats/history", response_model=StatsHistoryOut, responses=ADMINS_ONLY)
async def stats_history(
    _admin: AdminUser,
    session: SessionDep,
    minutes: Annotated[int, Query(ge=1, le=HISTORY_MAX_MINUTES)] = HISTORY_DEFAULT_MINUTES,
) -> StatsHistoryOut:
    """Per-minute figures of the last `minutes`, per node and in total, oldest first."""
    nodes, total = await history.read(session, minutes)
    return StatsHistoryOut(
        minutes=minutes,
        nodes={
            node: [StatsPointOut.model_validate(p) for p in points]
            for node, points in nodes.items()
        },
        total=[StatsPointOut.model_validate(p) for p in total],
    )


@router.get("/users", response_model=AdminUsersOut, responses=ADMINS_ONLY)
async def list_users(
    _admin: AdminUser,
    session: SessionDep,
    q: Annotated[str, Query(max_length=USERNAME_MAX_CHARS, pattern=USERNAME_SEARCH_PATTERN)] = "",
    limit: Annotated[int, Query(ge=1, le=USERS_MAX_LIMIT)] = USERS_DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> AdminUsersOut:
    """Users whose name contains `q` (any case), in name order; `total` counts them all."""
    page = await user_admin.search(session, q, limit, offset)
    return AdminUsersOut(users=[user_out(user) for user in page.users], total=page.total)


@router.patch(
    "/users/{username}",
    response_model=AdminUserOut,
    responses={
        **ADMINS_ONLY,
        **BAD_BODY,
        404: {"description": "No such user", "model": ErrorOut},
        409: {"description": "It would leave no active admin", "model": ErrorOut},
    },
)
async def update_user(
    username: str, body: AdminUserIn, _admin: AdminUser, services: ServicesDep
) -> AdminUserOut:
    """Deactivate or reactivate an account, or give or take the admin role. A deactivated
    account cannot sign in and its tokens and sockets (1008) end at once, everywhere."""
    try:
        user = await services.administer_user(username, body.is_admin, body.is_active)
    except UserNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except LastActiveAdmin as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return user_out(user)
