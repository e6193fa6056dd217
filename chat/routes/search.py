"""Searching the messages of every room the caller may read."""

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from chat import events, search
from chat.access import Action
from chat.deps import CurrentUser, ServicesDep, SessionDep
from chat.errors import StorageUnavailable
from chat.fields import ROOM_NAME_PATTERN
from chat.routes import STORAGE_FAILED, UNAUTHORIZED
from chat.routes.rooms import MAX_MESSAGE_ID, NOT_ALLOWED, NOT_FOUND, _refusals
from chat.schemas import MessageOut, MessagesOut

router = APIRouter(prefix="/api/search", tags=["search"])

# Longer than any cursor this server gives (a time, a room id and an id, in base64).
CURSOR_MAX_CHARS = 128
USERNAME_MAX_CHARS = 64


def _refused(param: str, value: str | int, why: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", param), "msg": why, "input": value}]
    )


@router.get(
    "",
    response_model=MessagesOut,
    responses={
        **UNAUTHORIZED,
        **NOT_ALLOWED,
        **NOT_FOUND,
        **STORAGE_FAILED,
        422: {"description": "A query, cursor or limit that cannot be used"},
    },
)
async def search_messages(
    request: Request,
    response: Response,
    user: CurrentUser,
    services: ServicesDep,
    session: SessionDep,
    q: Annotated[str, Query(max_length=search.QUERY_MAX_CHARS)],
    room: Annotated[str | None, Query(pattern=ROOM_NAME_PATTERN)] = None,
    author: Annotated[str | None, Query(alias="user", max_length=USERNAME_MAX_CHARS)] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_MESSAGE_ID)] = None,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=search.SEARCH_MAX_LIMIT)] = search.SEARCH_DEFAULT_LIMIT,
) -> MessagesOut:
    """Messages matching `q`, newest first, in the rooms the caller may read (deleted
    messages never match). `q` is words, all of which must match (the last one also as a
    prefix), and `"quoted phrases"`; at most 256 characters and 16 words and phrases.
    `room` keeps to one room (404 for a room the caller may not know of, as for none);
    `user` to one author (an unknown name finds nothing). While there may be more, a
    `Link: <...>; rel="next"` header gives the next page's URL: with `room`, `before=ID`
    (message ids are per room: the messages of that room with lower ids); without,
    an opaque `cursor` (the order across rooms is time, then room, then id)."""
    try:
        query = search.parse(q)
    except search.BadQuery as exc:
        raise _refused("q", q, str(exc)) from None
    after = None
    if cursor is not None:
        try:
            after = search.Cursor.decode(cursor)
        except search.BadQuery as exc:
            raise _refused("cursor", cursor, str(exc)) from None
    if before is not None and room is None:
        raise _refused("before", before, "message ids are per room: give `room` with `before`")
    if cursor is not None and (room is not None or before is not None):
        raise _refused("cursor", cursor, "`cursor` pages across rooms: not with `room`")
    # SQLite indexes new messages after their commit: every message acknowledged before
    # this search must be in the index before `session` first reads it.
    try:
        await services.writer.index_current()
    except StorageUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    room_id = None
    if room is not None:
        with _refusals():
            room_id = (await services.conversations.require(user, room, Action.READ)).room_id
    found = await search.search(
        session,
        user_id=user.id,
        is_admin=user.is_admin,
        query=query,
        room_id=room_id,
        author=author,
        before=before,
        cursor=after,
        limit=limit + 1,
    )
    if len(found) > limit:
        found = found[:limit]
        params: dict[str, str | int] = {"q": q, "limit": limit}
        if author is not None:
            params["user"] = author
        if room is not None:
            params.update(room=room, before=found[-1].message.id)
        else:
            params["cursor"] = found[-1].cursor.encode()
        response.headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return MessagesOut(messages=[MessageOut(**events.message_data(f.message)) for f in found])
