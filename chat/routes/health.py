"""Liveness for load balancers and operators."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from chat.deps import ServicesDep
from chat.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def healthz(services: ServicesDep) -> JSONResponse:
    if await services.is_healthy():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable"}, status_code=503)
