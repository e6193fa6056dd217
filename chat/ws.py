"""The WebSocket endpoints: a room's live chat, and the admins' live view."""

import asyncio
import contextlib
import functools
import logging
import time
from typing import NamedTuple
from urllib.parse import urlsplit

import orjson
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from chat import events, messages
from chat.deps import ACCESS_COOKIE, authenticate_token, get_services
from chat.errors import RateLimited, RoomNotFound, StorageUnavailable
from chat.hub import Connection
from chat.messages import BODY_MAX_CHARS, NONCE_MAX_CHARS, StoredMessage
from chat.models import User
from chat.security import TokenClaims
from chat.services import Services

log = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008
CLOSE_BAD_REQUEST = 4400
CLOSE_UNKNOWN_ROOM = 4404
# Typing hints from one socket are passed on at most this often.
TYPING_INTERVAL_SECS = 2.0
ADMIN_REFRESH_SECS = 1.0
# Messages one socket may have waiting for their commit before it stops reading.
MAX_UNCOMMITTED_PER_SOCKET = 64


class Refused(Exception):
    """The socket may not go on; the handler closes it with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _origin_allowed(websocket: WebSocket, services: Services) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        # Not a browser: an Origin header only protects a browser's cookies.
        return True
    origin = origin.rstrip("/")
    if origin in services.settings.allowed_origins:
        return True
    # The server's own origin: the scheme may differ behind a TLS-terminating proxy.
    return urlsplit(origin).netloc == websocket.headers.get("host")


def _token(websocket: WebSocket) -> str | None:
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    return websocket.query_params.get("token") or websocket.cookies.get(ACCESS_COOKIE)


async def _admit(websocket: WebSocket, services: Services) -> tuple[User, TokenClaims]:
    """The socket's user and its token's claims, or Refused."""
    if not _origin_allowed(websocket, services):
        raise Refused(CLOSE_POLICY_VIOLATION, "origin not allowed")
    token = _token(websocket)
    if not token:
        raise Refused(CLOSE_POLICY_VIOLATION, "missing token")
    found = await authenticate_token(services, token)
    if found is None:
        raise Refused(CLOSE_POLICY_VIOLATION, "invalid or expired token")
    return found


def _since(websocket: WebSocket) -> int | None:
    raw = websocket.query_params.get("since")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise Refused(CLOSE_BAD_REQUEST, "since must be a message id")
    return int(raw)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # Suppressed: the peer may have closed first.
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
        await websocket.close(code, reason)


async def room_socket(websocket: WebSocket) -> None:
    """`/ws/rooms/{name}`: a room's live chat."""
    services = get_services(websocket)
    name = websocket.path_params["name"]
    # Accept before refusing: a browser only learns a close code from an open socket.
    await websocket.accept()
    try:
        user, claims = await _admit(websocket, services)
        try:
            room_id = await services.rooms.id_of(name)
        except RoomNotFound:
            raise Refused(CLOSE_UNKNOWN_ROOM, "unknown room") from None
        since = _since(websocket)
        if (
            services.hub.user_connections(user.username)
            >= services.settings.max_connections_per_user
        ):
            raise Refused(CLOSE_POLICY_VIOLATION, "too many connections")
    except Refused as refused:
        await _close(websocket, refused.code, refused.reason)
        return
    settings = services.settings
    connection = Connection(
        websocket,
        name,
        user.username,
        claims.token_id,
        settings.send_queue_max,
        settings.send_buffer_max_bytes,
    )
    # Only what the socket's life needs is kept, not the ORM's user and the claims.
    member = Member(user.id, user.username, user.username_key)
    expires_at = claims.expires_at.timestamp()
    del user, claims
    await _serve(connection, member, room_id, since, expires_at, services)


class Member(NamedTuple):
    """The user of a room socket."""

    id: int
    username: str
    username_key: str


async def _serve(
    connection: Connection,
    member: Member,
    room_id: int,
    since: int | None,
    expires_at: float,
    services: Services,
) -> None:
    room, websocket = connection.room, connection.websocket
    reader = asyncio.current_task()
    # Join the fan-out first and read history second: whatever is published in
    # between is queued, and the floor drops what the history already holds.
    services.hub.add(connection)
    connection.reader = reader
    expiry = asyncio.get_running_loop().call_later(
        max(0.0, expires_at - time.time()),
        connection.kick,
        CLOSE_POLICY_VIOLATION,
        "token expired",
    )
    try:
        users = await services.presence.join(room, member.username)
        if users is not None:
            await services.announce_presence(room, "join", member.username, users)
        else:
            users = await services.presence.users(room)
        last_seq, history, truncated = await _history(services, room_id, room, since)
        connection.floor = history[-1].id if history else min(since or 0, last_seq)
        services.hub.start_feed(room, last_seq)
        welcome = events.welcome_event(room, member.username, users, history, truncated)
        del users, history
        await websocket.send_text(events.encode(welcome).decode())
        del welcome
        connection.start_sending()
        await _receive(connection, member, room_id, services)
    except asyncio.CancelledError:
        # kick() ends a connection this way; any other cancellation goes on.
        if connection.close_code is None or (reader is not None and reader.uncancel()):
            raise
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # The peer went away.
    finally:
        # From here on a kick no longer cancels: the cleanup below must run whole.
        connection.reader = None
        expiry.cancel()
        services.hub.remove(connection)
        if connection.sender is not None:
            connection.sender.cancel()
            await asyncio.gather(connection.sender, return_exceptions=True)
        left = await services.presence.leave(room, member.username)
        if left is not None:
            await services.announce_presence(room, "leave", member.username, left)
    if connection.close_code is not None:
        await connection.close()


async def _history(
    services: Services, room_id: int, room: str, since: int | None
) -> tuple[int, list[StoredMessage], bool]:
    """The room's newest seq, read first, then the welcome's history."""
    async with services.sessions() as session:
        last_seq = await messages.latest_seq(session, room_id)
        if since is None:
            return last_seq, await messages.history(session, room_id, room), False
        return last_seq, *await messages.resume(session, room_id, room, since)


class _Strikes:
    """Error frames within a sliding window; too many and the socket is abusive."""

    def __init__(self, limit: int, window_secs: float) -> None:
        self._limit = limit
        self._window_secs = window_secs
        self._times: list[float] = []

    def add(self) -> bool:
        """Count one; True when the limit is passed."""
        now = time.monotonic()
        self._times = [t for t in self._times if now - t < self._window_secs]
        self._times.append(now)
        return len(self._times) > self._limit


async def _receive(
    connection: Connection, member: Member, room_id: int, services: Services
) -> None:
    """Read the client's frames until it goes or its connection is kicked."""
    settings = services.settings
    strikes = _Strikes(settings.abuse_max_errors, settings.abuse_window_secs)
    typing = _TypingThrottle()
    inflight: set[asyncio.Future[tuple[StoredMessage, bool]]] = set()
    while connection.close_code is None:
        frame = await connection.websocket.receive()
        if frame["type"] == "websocket.disconnect":
            return
        text = frame.get("text")
        if text is None:
            error = events.error_event("invalid_message", "frames must be JSON text")
        else:
            error = await _handle(text, connection, member, room_id, services, typing, inflight)
        if error is not None:
            connection.push((0, events.encode(error)))
            if strikes.add():
                connection.kick(CLOSE_POLICY_VIOLATION, "too many bad frames")
                return


class _TypingThrottle:
    def __init__(self) -> None:
        self._last = 0.0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._last < TYPING_INTERVAL_SECS:
            return False
        self._last = now
        return True


async def _handle(
    text: str,
    connection: Connection,
    member: Member,
    room_id: int,
    services: Services,
    typing: _TypingThrottle,
    inflight: set[asyncio.Future[tuple[StoredMessage, bool]]],
) -> dict[str, object] | None:
    """Act on one client frame; the error event to answer with, if any."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return events.error_event("invalid_json", "frame is not valid JSON")
    if not isinstance(frame, dict):
        return events.error_event("invalid_message", "frame must be a JSON object")
    kind = frame.get("type")
    if kind == "typing":
        if typing.allow():
            await services.publish(
                connection.room, events.typing_event(connection.room, member.username)
            )
        return None
    if kind != "message":
        return events.error_event("invalid_message", "type must be 'message' or 'typing'")
    body, nonce = frame.get("body"), frame.get("nonce")
    if not isinstance(body, str):
        return events.error_event("invalid_message", "body must be a string")
    body = body.strip()
    if not body:
        return events.error_event("invalid_message", "body is empty")
    if len(body) > BODY_MAX_CHARS:
        return events.error_event("too_large", f"body is over {BODY_MAX_CHARS} characters")
    if "\x00" in body:
        # PostgreSQL cannot store a NUL in text; the REST API refuses one too.
        return events.error_event("invalid_message", "body must not contain NUL characters")
    if nonce is not None and (
        not isinstance(nonce, str) or not 0 < len(nonce) <= NONCE_MAX_CHARS or "\x00" in nonce
    ):
        return events.error_event(
            "invalid_message",
            f"nonce must be a string of 1-{NONCE_MAX_CHARS} characters, without NUL",
        )
    try:
        await services.limiter.acquire(member.username_key)
        stored = services.writer.submit(
            connection.room, room_id, member.id, member.username, body, nonce
        )
    except RateLimited as exc:
        return events.error_event("rate_limited", str(exc))
    except StorageUnavailable as exc:
        return events.error_event("unavailable", str(exc))
    # Read on while the message waits for its commit, so that one client's messages
    # share commits too; the acknowledgement is the broadcast, after the commit.
    stored.add_done_callback(functools.partial(_answer_stored, connection))
    inflight.add(stored)
    stored.add_done_callback(inflight.discard)
    if len(inflight) >= MAX_UNCOMMITTED_PER_SOCKET:
        await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
    return None


def _answer_stored(
    connection: Connection, stored: asyncio.Future[tuple[StoredMessage, bool]]
) -> None:
    if stored.cancelled():
        return
    if stored.exception() is not None:
        error = events.error_event("unavailable", str(StorageUnavailable()))
        connection.push((0, events.encode(error)))
        return
    message, is_new = stored.result()
    if not is_new:
        # A retry of a stored message: acknowledge it again, to the sender only.
        connection.push((0, events.encode(events.message_event(message))))


async def admin_socket(websocket: WebSocket) -> None:
    """`/ws/admin`: the admins' live view of the rooms."""
    services = get_services(websocket)
    await websocket.accept()
    try:
        user, _claims = await _admit(websocket, services)
        if not user.is_admin:
            raise Refused(CLOSE_POLICY_VIOLATION, "admins only")
    except Refused as refused:
        await _close(websocket, refused.code, refused.reason)
        return
    receiver = asyncio.create_task(_drain(websocket))
    try:
        while not receiver.done():
            changed = services.presence_changed
            connections, rate = await services.presence.figures()
            stats = events.stats_event(
                await services.presence.snapshot(),
                connections,
                rate,
                services.loop_lag.take_max_ms(),
            )
            await websocket.send_text(events.encode(stats).decode())
            # A send to a closed socket raises, so a gone admin ends the loop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), ADMIN_REFRESH_SECS)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)


async def _drain(websocket: WebSocket) -> None:
    """Read and ignore what an admin view sends, until it goes away."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


# Plain Starlette routes, dispatched by `chat.app.SocketRoutes` ahead of the HTTP
# middleware and FastAPI's per-request machinery: a socket holds its whole call
# chain for as long as it is open, so each layer costs memory per socket.
routes = [
    WebSocketRoute("/ws/rooms/{name}", room_socket),
    WebSocketRoute("/ws/admin", admin_socket),
]
