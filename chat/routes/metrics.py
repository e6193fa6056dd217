"""`GET /metrics`: the Prometheus text format, for callers holding `CHAT_METRICS_TOKEN`."""

import asyncio

from fastapi import APIRouter, HTTPException, Request, Response, status

from chat.deps import ServicesDep
from chat.prometheus import CONTENT_TYPE_LATEST, token_matches

# An operator's endpoint with its own credentials, not part of the API: kept out of the
# OpenAPI document like the pages.
router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(request: Request, services: ServicesDep) -> Response:
    token = services.settings.metrics_token
    if not token:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    if not token_matches(request.headers.get("authorization"), token):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Send Authorization: Bearer <CHAT_METRICS_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    await services.metrics.refresh(services)
    # Off the loop: in multiprocess mode it reads every worker's files.
    body = await asyncio.to_thread(services.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
