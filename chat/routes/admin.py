"""What admins see."""

from fastapi import APIRouter

from chat.deps import AdminUser, ServicesDep
from chat.schemas import ActiveUsersOut

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get(
    "/active-users",
    response_model=ActiveUsersOut,
    responses={401: {"description": "No valid token"}, 403: {"description": "Not an admin"}},
)
async def active_users(_admin: AdminUser, services: ServicesDep) -> ActiveUsersOut:
    return ActiveUsersOut(rooms=await services.presence.snapshot())
