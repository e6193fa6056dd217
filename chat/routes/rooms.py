"""Rooms and their message history."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from chat import events, messages
from chat.access import Action
from chat.changes import Who
from chat.conversations import RoomView
from chat.deps import CurrentUser, ServicesDep, SessionDep, too_many_requests
from chat.errors import (
    Forbidden,
    LastOwner,
    MessageNotFound,
    NotAMember,
    RateLimited,
    RoomExists,
    RoomNotFound,
    RoomQuotaReached,
    StorageUnavailable,
    UserNotFound,
)
from chat.fields import ROOM_NAME_PATTERN, Emoji
from chat.messages import HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT
from chat.rooms import ROOMS_DEFAULT_LIMIT, ROOMS_MAX_LIMIT
from chat.routes import BAD_BODY, CSRF_REFUSED, STORAGE_FAILED, UNAUTHORIZED, Responses
from chat.schemas import (
    BanOut,
    DmIn,
    ErrorOut,
    MemberOut,
    MessageEditIn,
    MessageIn,
    MessageOut,
    MessagesOut,
    ReadIn,
    RoleIn,
    RoomIn,
    RoomOut,
    RoomPatchIn,
)
from chat.services import Author

router = APIRouter(prefix="/api/rooms", tags=["rooms"])

NOT_FOUND: Responses = {
    404: {"description": "No such room, or one the caller may not know of", "model": ErrorOut}
}
NOT_ALLOWED: Responses = {
    403: {
        "description": "Not allowed in this room (banned, or not a moderator); or a cookie "
        "sign-in without the CSRF header",
        "model": ErrorOut,
    }
}
NO_USER: Responses = {
    404: {"description": "No such room, or no such user in it", "model": ErrorOut}
}
LAST_OWNER: Responses = {409: {"description": "It would leave no owner", "model": ErrorOut}}
CHANGES_LIMITED: Responses = {
    429: {"description": "Membership changes too fast; see Retry-After", "model": ErrorOut}
}
# Ids are 64-bit integers in the database; a larger cursor would overflow the driver.
MAX_MESSAGE_ID = 2**63 - 1


@contextmanager
def _refusals() -> Iterator[None]:
    """Turn the conversation errors into their HTTP answers."""
    try:
        yield
    except (RoomNotFound, UserNotFound, NotAMember, MessageNotFound) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except LastOwner as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except RateLimited as exc:
        raise too_many_requests(exc) from None


def room_out(view: RoomView) -> RoomOut:
    return RoomOut(
        name=view.name,
        kind=view.kind,  # type: ignore[arg-type]
        topic=view.topic,
        created_at=view.created_at,
        active_users=view.active_users,
        member_count=view.member_count,
        is_member=view.is_member,
        role=view.role,  # type: ignore[arg-type]
        unread=view.unread,
        mentions=view.mentions,
        last_message_id=view.last_message_id,
    )


@router.get("", response_model=list[RoomOut], responses=UNAUTHORIZED)
async def list_rooms(
    request: Request,
    response: Response,
    user: CurrentUser,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=ROOMS_MAX_LIMIT)] = ROOMS_DEFAULT_LIMIT,
    after: Annotated[str | None, Query(pattern=ROOM_NAME_PATTERN)] = None,
) -> list[RoomOut]:
    """The public rooms and the caller's own (private rooms and DMs), in name order,
    `limit` at a time; a `Link: <...>; rel="next"` header names the next page while there
    is one."""
    rooms = await services.conversations.list_rooms(user, after or "", limit + 1)
    if len(rooms) > limit:
        rooms = rooms[:limit]
        query = urlencode({"limit": limit, "after": rooms[-1].name})
        response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    return [room_out(room) for room in rooms]


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
    """A public or private room; its creator is its owner."""
    try:
        view = await services.conversations.create(user, body.name, body.kind, body.topic)
    except RoomExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except RoomQuotaReached as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except RateLimited as exc:
        raise too_many_requests(exc) from None
    return room_out(view)


@router.get(
    "/{name}", response_model=RoomOut, responses={**UNAUTHORIZED, **NOT_ALLOWED, **NOT_FOUND}
)
async def get_room(name: str, user: CurrentUser, services: ServicesDep) -> RoomOut:
    with _refusals():
        return room_out(await services.conversations.view(user, name))


@router.patch(
    "/{name}",
    response_model=RoomOut,
    responses={**CHANGES_LIMITED, **UNAUTHORIZED, **NOT_ALLOWED, **NOT_FOUND, **BAD_BODY},
)
async def update_room(
    name: str, body: RoomPatchIn, user: CurrentUser, services: ServicesDep
) -> RoomOut:
    """Set the topic (owners and moderators; any member of a DM)."""
    with _refusals():
        return room_out(await services.conversations.set_topic(user, name, body.topic))


@router.get(
    "/{name}/members",
    response_model=list[MemberOut],
    responses={**UNAUTHORIZED, **NOT_ALLOWED, **NOT_FOUND},
)
async def list_members(name: str, user: CurrentUser, services: ServicesDep) -> list[MemberOut]:
    with _refusals():
        found = await services.conversations.members(user, name)
    return [MemberOut(username=m.username, role=m.role) for m in found]  # type: ignore[arg-type]


@router.put(
    "/{name}/members/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**CHANGES_LIMITED, **UNAUTHORIZED, **NOT_ALLOWED, **NO_USER},
)
async def put_member(name: str, username: str, user: CurrentUser, services: ServicesDep) -> None:
    """Join a public room yourself, or add someone (owners and moderators)."""
    with _refusals():
        await services.conversations.put_member(user, name, username)


@router.delete(
    "/{name}/members/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**CHANGES_LIMITED, **UNAUTHORIZED, **NOT_ALLOWED, **NO_USER, **LAST_OWNER},
)
async def delete_member(name: str, username: str, user: CurrentUser, services: ServicesDep) -> None:
    """Leave, or remove someone (owners and moderators): their sockets in the room close
    with 4403 at once, on every node."""
    with _refusals():
        await services.conversations.delete_member(user, name, username)


@router.patch(
    "/{name}/members/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **CHANGES_LIMITED,
        **UNAUTHORIZED,
        **NOT_ALLOWED,
        **NO_USER,
        **LAST_OWNER,
        **BAD_BODY,
    },
)
async def set_role(
    name: str, username: str, body: RoleIn, user: CurrentUser, services: ServicesDep
) -> None:
    """Give a member another role (owners only; a room keeps at least one owner)."""
    with _refusals():
        await services.conversations.set_role(user, name, username, body.role)


@router.get(
    "/{name}/bans",
    response_model=list[BanOut],
    responses={**UNAUTHORIZED, **NOT_ALLOWED, **NOT_FOUND},
)
async def list_bans(name: str, user: CurrentUser, services: ServicesDep) -> list[BanOut]:
    """Who is banned (owners and moderators)."""
    with _refusals():
        return [BanOut(username=u) for u in await services.conversations.banned(user, name)]


@router.put(
    "/{name}/bans/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**CHANGES_LIMITED, **UNAUTHORIZED, **NOT_ALLOWED, **NO_USER, **LAST_OWNER},
)
async def ban(name: str, username: str, user: CurrentUser, services: ServicesDep) -> None:
    """Ban someone (owners and moderators): removed, their sockets closed (4403), and they
    may not join, read or post until the ban is lifted."""
    with _refusals():
        await services.conversations.ban(user, name, username)


@router.delete(
    "/{name}/bans/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**CHANGES_LIMITED, **UNAUTHORIZED, **NOT_ALLOWED, **NO_USER},
)
async def unban(name: str, username: str, user: CurrentUser, services: ServicesDep) -> None:
    with _refusals():
        await services.conversations.unban(user, name, username)


@router.put(
    "/{name}/read",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**UNAUTHORIZED, **CSRF_REFUSED, **NOT_ALLOWED, **NOT_FOUND, **BAD_BODY},
)
async def mark_read(name: str, body: ReadIn, user: CurrentUser, services: ServicesDep) -> None:
    """Move the caller's read marker to `up_to` (SPEC "Attention"): never backwards (a
    lower value changes nothing), never past the room's newest message (a higher one is
    clamped). If it moved, the caller's sockets hear of it on every node."""
    with _refusals():
        standing = await services.conversations.require(user, name, Action.READ)
    await services.mark_read(user, name, standing.room_id, body.up_to)


dms = APIRouter(prefix="/api/dms", tags=["rooms"])


@dms.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RoomOut,
    responses={
        **UNAUTHORIZED,
        **CSRF_REFUSED,
        **BAD_BODY,
        200: {"description": "The DM of exactly these people, made before", "model": RoomOut},
        404: {"description": "No such user", "model": ErrorOut},
        429: {"description": "Rooms created too fast; see Retry-After", "model": ErrorOut},
    },
)
async def open_dm(
    body: DmIn, user: CurrentUser, services: ServicesDep, response: Response
) -> RoomOut:
    """The direct conversation between the caller and `users`: made once per set of
    people, and given back as it is when asked for again."""
    others = {name.lower() for name in body.users} - {user.username_key}
    if not others:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "users"),
                    "msg": "Value error, name at least one other person",
                    "input": body.users,
                }
            ]
        )
    with _refusals():
        view, created = await services.conversations.open_dm(user, sorted(others))
    if not created:
        response.status_code = status.HTTP_200_OK
    return room_out(view)


@router.get(
    "/{name}/messages",
    response_model=MessagesOut,
    responses={**UNAUTHORIZED, **NOT_ALLOWED, **NOT_FOUND},
)
async def list_messages(
    name: str,
    user: CurrentUser,
    services: ServicesDep,
    session: SessionDep,
    before: Annotated[int | None, Query(ge=1, le=MAX_MESSAGE_ID)] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_MESSAGE_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=HISTORY_MAX_LIMIT)] = HISTORY_DEFAULT_LIMIT,
) -> MessagesOut:
    with _refusals():
        standing = await services.conversations.require(user, name, Action.READ)
    found = await messages.history(
        session, standing.room_id, name, before=before, after=after, limit=limit
    )
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
        **NOT_ALLOWED,
        200: {"description": "Repeated nonce: the message stored before", "model": MessageOut},
        429: {"description": "Rate limited; see Retry-After", "model": ErrorOut},
        503: {"description": "Message storage unavailable; try again", "model": ErrorOut},
    },
)
async def post_message(
    name: str, body: MessageIn, user: CurrentUser, services: ServicesDep, response: Response
) -> MessageOut:
    with _refusals():
        standing = await services.conversations.require(user, name, Action.POST)
        # Posting in a public room makes one a member, as opening its socket does.
        await services.conversations.join_by_use(user, standing)
    author = Author(user.id, user.username, user.username_key)
    try:
        stored = await services.post_message(author, name, standing.room_id, body.body, body.nonce)
        message, is_new = await stored
    except RateLimited as exc:
        raise too_many_requests(exc) from None
    except StorageUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    if not is_new:
        response.status_code = status.HTTP_200_OK
    return MessageOut(**events.message_data(message))


MESSAGE_CHANGE: Responses = {
    **UNAUTHORIZED,
    **CSRF_REFUSED,
    404: {
        "description": "No such room (or one the caller may not know of), or no such "
        "message in it, or a deleted one",
        "model": ErrorOut,
    },
    403: {
        "description": "Not the caller's to change (someone else's message, the edit "
        "window is over, banned), or a cookie sign-in without the CSRF header",
        "model": ErrorOut,
    },
    429: {"description": "Rate limited; see Retry-After", "model": ErrorOut},
}
MessageIdPath = Annotated[int, Path(ge=1, le=MAX_MESSAGE_ID)]
EmojiPath = Annotated[Emoji, Path(description="URL-encoded")]


def _who(user: CurrentUser) -> Who:
    return Who(user.id, user.username, user.username_key, user.is_admin)


@router.patch(
    "/{name}/messages/{message_id}",
    response_model=MessageOut,
    responses={**MESSAGE_CHANGE, **BAD_BODY},
)
async def edit_message(
    name: str,
    message_id: MessageIdPath,
    body: MessageEditIn,
    user: CurrentUser,
    services: ServicesDep,
) -> MessageOut:
    """Edit your own message within `CHAT_EDIT_WINDOW_MINUTES` of sending it; everyone in
    the room gets an `update` with its new state."""
    with _refusals():
        message = await services.changes.edit(_who(user), name, message_id, body.body)
    return MessageOut(**events.message_data(message))


@router.delete(
    "/{name}/messages/{message_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=MESSAGE_CHANGE,
)
async def delete_message(
    name: str, message_id: MessageIdPath, user: CurrentUser, services: ServicesDep
) -> None:
    """Delete your own message, or any in a room you moderate (site admins: any in public
    and private rooms): it keeps its id, author and time; its body, reactions and mentions
    are gone."""
    with _refusals():
        await services.changes.delete(_who(user), name, message_id)


@router.put(
    "/{name}/messages/{message_id}/reactions/{emoji}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**MESSAGE_CHANGE, **BAD_BODY},
)
async def add_reaction(
    name: str, message_id: MessageIdPath, emoji: EmojiPath, user: CurrentUser, services: ServicesDep
) -> None:
    """React to a message with an emoji (one grapheme of at most 16 bytes, or a
    `:short_name:`); reacting again with the same one changes nothing."""
    with _refusals():
        await services.changes.react(_who(user), name, message_id, emoji, True)


@router.delete(
    "/{name}/messages/{message_id}/reactions/{emoji}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**MESSAGE_CHANGE, **BAD_BODY},
)
async def remove_reaction(
    name: str, message_id: MessageIdPath, emoji: EmojiPath, user: CurrentUser, services: ServicesDep
) -> None:
    """Take back your reaction; taking back one you did not make changes nothing."""
    with _refusals():
        await services.changes.react(_who(user), name, message_id, emoji, False)
