"""Rooms and their message history."""

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from chat import events, messages
from chat.deps import CurrentUser, ServicesDep, SessionDep, too_many_requests
from chat.errors import (
    RateLimited,
    RoomExists,
    RoomNotFound,
    RoomQuotaReached,
    StorageUnavailable,
)
from chat.fields import ROOM_NAME_PATTERN
from chat.messages import HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT
from chat.rooms import ROOMS_DEFAULT_LIMIT, ROOMS_MAX_LIMIT
from chat.routes import BAD_BODY, CSRF_REFUSED, STORAGE_FAILED, UNAUTHORIZED, Responses
from chat.schemas import ErrorOut, MessageIn, MessageOut, MessagesOut, RoomIn, RoomOut
from chat.services import Author, Services

router = APIRouter(prefix="/api/rooms", tags=["rooms"])

NOT_FOUND: Responses = {404: {"description": "No such room", "model": ErrorOut}}
# Ids are 64-bit integers in the database; a larger cursor would overflow the driver.
MAX_MESSAGE_ID = 2**63 - 1


async def _room_id(services: Services, name: str) -> int:
    try:
        return await services.rooms.id_of(name)
    except RoomNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get("", response_model=list[RoomOut], responses=UNAUTHORIZED)
async def list_rooms(
    request: Request,
    response: Response,
    _user: CurrentUser,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=ROOMS_MAX_LIMIT)] = ROOMS_DEFAULT_LIMIT,
    after: Annotated[str | None, Query(pattern=ROOM_NAME_PATTERN)] = None,
) -> list[RoomOut]:
    """Rooms in name order, `limit` at a time; a `Link: <...>; rel="next"` header names
    the next page while there is one."""
    rooms = await services.rooms.list(after or "", limit + 1)
    if len(rooms) > limit:
        rooms = rooms[:limit]
        query = urlencode({"limit": limit, "after": rooms[-1].name})
        response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    active = await services.presence.snapshot()
    return [
        RoomOut(name=r.name, created_at=r.created_at, active_users=len(active.get(r.name, ())))
        for r in rooms
    ]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RoomOut,
    responses={
        **UNAUTHORIZED,
        **CSRF_REFUSED,
        **BAD_BODY,
        **STORAGE_FAILED,
        403: {"description": "Room limit of this account reached", "model": ErrorOut},
        409: {"description": "Room exists", "model": ErrorOut},
        429: {"description": "Rooms created too fast; see Retry-After", "model": ErrorOut},
    },
)
async def create_room(body: RoomIn, user: CurrentUser, services: ServicesDep) -> RoomOut:
    try:
        room = await services.rooms.create(body.name, user)
    except RoomExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except RoomQuotaReached as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except RateLimited as exc:
        raise too_many_requests(exc) from None
    return RoomOut(name=room.name, created_at=room.created_at, active_users=0)


@router.get("/{name}/messages", response_model=MessagesOut, responses={**UNAUTHORIZED, **NOT_FOUND})
async def list_messages(
    name: str,
    _user: CurrentUser,
    services: ServicesDep,
    session: SessionDep,
    before: Annotated[int | None, Query(ge=1, le=MAX_MESSAGE_ID)] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_MESSAGE_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=HISTORY_MAX_LIMIT)] = HISTORY_DEFAULT_LIMIT,
) -> MessagesOut:
    room_id = await _room_id(services, name)
    found = await messages.history(session, room_id, name, before=before, after=after, limit=limit)
    return MessagesOut(messages=[MessageOut(**events.message_data(m)) for m in found])


@router.post(
    "/{name}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    responses={
        **UNAUTHORIZED,
        **CSRF_REFUSED,
        **BAD_BODY,
        **NOT_FOUND,
        200: {"description": "Repeated nonce: the message stored before", "model": MessageOut},
        429: {"description": "Rate limited; see Retry-After", "model": ErrorOut},
        503: {"description": "Message storage unavailable; try again", "model": ErrorOut},
    },
)
async def post_message(
    name: str, body: MessageIn, user: CurrentUser, services: ServicesDep, response: Response
) -> MessageOut:
    room_id = await _room_id(services, name)
    author = Author(user.id, user.username, user.username_key)
    try:
        stored = await services.post_message(author, name, room_id, body.body, body.nonce)
        message, is_new = await stored
    except RateLimited as exc:
        raise too_many_requests(exc) from None
    except StorageUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    if not is_new:
        response.status_code = status.HTTP_200_OK
    return MessageOut(**events.message_data(message))
