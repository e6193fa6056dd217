"""What admins see."""

from fastapi import APIRouter

from chat.deps import AdminUser, ServicesDep
from chat.routes import UNAUTHORIZED
from chat.schemas import ActiveUsersOut, ErrorOut

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get(
    "/active-users",
    response_model=ActiveUsersOut,
    responses={**UNAUTHORIZED, 403: {"description": "Not an admin", "model": ErrorOut}},
)
async def active_users(_admin: AdminUser, services: ServicesDep) -> ActiveUsersOut:
    return ActiveUsersOut(rooms=await services.presence.snapshot())
