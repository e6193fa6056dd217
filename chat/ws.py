"""The WebSocket endpoints: a room's live chat, and the admins' live view."""

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from chat import events, messages, signins
from chat.access import Action
from chat.admin_views import AdminView
from chat.closecodes import CloseCode
from chat.deps import ACCESS_COOKIE, Authenticated, authenticate_token, get_services
from chat.errors import (
    Forbidden,
    MessageNotFound,
    RateLimited,
    RoomNotFound,
    StorageUnavailable,
)
from chat.events import ErrorFrame, ReadyFrame
from chat.fields import parse_since
from chat.frames import (
    DeleteFrame,
    EditFrame,
    FrameError,
    MessageFrame,
    ReactFrame,
    parse_frame,
)
from chat.hub import Connection
from chat.messages import StoredMessage
from chat.services import DEACTIVATED_REASON, Author, Services, WelcomeRead

log = logging.getLogger(__name__)

# Typing hints from one socket are passed on at most this often.
TYPING_INTERVAL_SECS = 2.0
ADMIN_REFRESH_SECS = 1.0
# Messages one socket may have waiting for their commit before it stops reading.
MAX_UNCOMMITTED_PER_SOCKET = 64
# Handshake buckets apart from message buckets: no username holds a ':'.
HANDSHAKE_KEY_PREFIX = "handshake:"


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


def _token(websocket: WebSocket) -> tuple[str | None, bool]:
    """The socket's access token, and whether it came from the cookie."""
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip(), False
    query = websocket.query_params.get("token")
    if query:
        return query, False
    return websocket.cookies.get(ACCESS_COOKIE), True


async def _authenticate(websocket: WebSocket, services: Services) -> Authenticated | None:
    token, from_cookie = _token(websocket)
    # A browser session's cookie is as good as the renewal the page's next request would
    # get: a socket that reconnects after the access token expired gets in.
    return await authenticate_token(services, token, renewable=from_cookie, shared=True)


async def _admit(websocket: WebSocket, services: Services) -> Authenticated:
    """The socket's user, its token's claims and session, or Refused."""
    if not _origin_allowed(websocket, services):
        raise Refused(CloseCode.UNAUTHENTICATED, "origin not allowed")
    if not _token(websocket)[0]:
        raise Refused(CloseCode.UNAUTHENTICATED, "missing token")
    found = await _authenticate(websocket, services)
    if found is None:
        raise Refused(CloseCode.UNAUTHENTICATED, "invalid or expired token")
    try:
        # Before the welcome: a reconnect loop with `since=0` is served a history each time.
        await services.handshakes.acquire(HANDSHAKE_KEY_PREFIX + found.user.username_key)
    except RateLimited:
        raise Refused(CloseCode.TOO_MANY, "too many connections; wait") from None
    return found


def _expires_at(found: Authenticated) -> float:
    """When the socket's authentication runs out: a browser session's socket lives as long
    as its session (the access token is renewed meanwhile); an API token's, as its token."""
    if found.session.kind == signins.BROWSER:
        return found.session.expires_at.timestamp()
    return found.claims.expires_at.timestamp()


def _since(websocket: WebSocket) -> int | None:
    raw = websocket.query_params.get("since")
    if raw is None:
        return None
    since = parse_since(raw)
    if since is None:
        raise Refused(CloseCode.BAD_REQUEST, "since must be a message id")
    return since


def _expire(expires_at: float, kick: Callable[[int, str], None]) -> asyncio.TimerHandle:
    """Close a socket (1008) when its authentication runs out, at `expires_at` (epoch)."""
    return asyncio.get_running_loop().call_later(
        max(0.0, expires_at - time.time()), kick, CloseCode.UNAUTHENTICATED, "session expired"
    )


def _forget_headers(websocket: WebSocket) -> None:
    """Let go of the handshake's headers once a room or `/ws/me` socket is admitted: nothing
    reads them later, and a server of many idle sockets would keep them all (a kilobyte and
    more each, the token among them) for as long as the sockets are open."""
    headers = websocket.scope.get("headers")
    if isinstance(headers, list):
        # In place: Starlette's cached `websocket.headers` holds this same list.
        headers.clear()


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
    admitted_at = time.monotonic()
    try:
        found = await _admit(websocket, services)
        user = found.user
        try:
            standing = await services.conversations.require(user, name, Action.READ, shared=True)
        except RoomNotFound:
            # Also a private room or DM the user is not in: it does not exist for them.
            raise Refused(CloseCode.NOT_FOUND, "unknown room") from None
        except Forbidden as exc:
            raise Refused(CloseCode.FORBIDDEN, str(exc)) from None
        room_id = standing.room_id
        since = _since(websocket)
        open_here = services.hub.user_connections(user.username)
        # `/ws/me` sockets count too: both are the user's sockets on this process.
        if (
            open_here + services.me.count(user.username)
            >= services.settings.max_connections_per_user
        ):
            raise Refused(CloseCode.TOO_MANY, "too many connections")
        # Opening a public room's socket makes one a member.
        try:
            await services.conversations.join_by_use(user, standing)
        except Forbidden as exc:
            # Banned while the socket was being admitted.
            raise Refused(CloseCode.FORBIDDEN, str(exc)) from None
    except Refused as refused:
        await _close(websocket, refused.code, refused.reason)
        return
    settings = services.settings
    connection = Connection(
        websocket,
        name,
        user.username,
        found.claims.token_id,
        settings.send_queue_max,
        settings.send_buffer_max_bytes,
        found.claims.session_id,
    )
    connection.user_id, connection.token_key = user.id, found.claims.token_key
    # Only what the socket's life needs is kept, not the ORM's user and the claims.
    member = Author(user.id, user.username, user.username_key)
    expires_at = _expires_at(found)
    del user, found
    _forget_headers(websocket)
    await _serve(connection, member, room_id, since, admitted_at, expires_at, services)


async def _serve(
    connection: Connection,
    member: Author,
    room_id: int,
    since: int | None,
    admitted_at: float,
    expires_at: float,
    services: Services,
) -> None:
    """Serve an admitted socket; `admitted_at` (monotonic) is when its account was about
    to be read, `expires_at` (epoch) when its token expires."""
    room, websocket = connection.room, connection.websocket
    reader = asyncio.current_task()
    # Join the fan-out first and read history second: whatever is published in
    # between is queued, and the floor drops what the history already holds.
    services.hub.add(connection)
    if services.deactivated_since(member.id, admitted_at):
        # Deactivated after the account was read, before the hub could hear of it.
        services.hub.remove(connection)
        await _close(websocket, CloseCode.UNAUTHENTICATED, DEACTIVATED_REASON)
        return
    if services.removed_since(room, member.id, admitted_at):
        # Removed from the room after its membership was read, before the hub could hear.
        services.hub.remove(connection)
        await _close(websocket, CloseCode.FORBIDDEN, "removed from the room")
        return
    connection.reader = reader
    services.last_seen.mark(member.id)
    expiry = _expire(expires_at, connection.kick)
    try:
        users = await services.presence.join(room, member.username)
        if users is not None:
            await services.announce_presence(room, "join", member.username, users)
        else:
            users = await services.presence.users(room)
        # Shared with the room's sockets asking for the same at once (a reconnect storm):
        # the read starts after this socket joined the hub, as if it were its own.
        last_seq, history, truncated, updates = await services.welcome_reads.read(
            (room_id, since), lambda: _history(services, room_id, room, since)
        )
        # Everything numbered up to here is reflected in the welcome (see `_history`).
        connection.floor = max(history[-1].id if history else 0, last_seq)
        services.hub.start_feed(room, last_seq)
        welcome = events.welcome_frame(room, member.username, users, history, truncated, updates)
        del users, history, updates
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
        services.last_seen.mark(member.id)
        left = await services.presence.leave(room, member.username)
        if left is not None:
            await services.announce_presence(room, "leave", member.username, left)
    if connection.close_code is not None:
        await connection.close()


async def _history(services: Services, room_id: int, room: str, since: int | None) -> WelcomeRead:
    """The room's newest seq, read first; then the welcome's history; then, on a resume,
    the updates: messages up to `since` changed after it, in their current state.

    The room's sequence commits in order, so each read sees every number below the newest
    it sees: the history reflects every change numbered below its newest message, and the
    updates, read after it, every change up to the larger of that message and the seq.
    Frames numbered up to there are not sent again; later ones are."""
    async with services.sessions() as session:
        last_seq = await messages.latest_seq(session, room_id)
        if since is None:
            return last_seq, await messages.history(session, room_id, room), False, None
        history, truncated = await messages.resume(session, room_id, room, since)
        updates = await messages.changed_since(session, room_id, room, since)
        if updates is None:
            # Too much changed to send: start over from the newest messages, as when too
            # many are missed (a client clears what it has on `truncated`).
            history = await messages.history(
                session, room_id, room, limit=messages.RESUME_MAX_MESSAGES
            )
            return last_seq, history, True, []
        return last_seq, history, truncated, updates


class _Strikes:
    """Error frames within a sliding window; too many and the socket is abusive."""

    __slots__ = ("_limit", "_times", "_window_secs")

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
    connection: Connection, member: Author, room_id: int, services: Services
) -> None:
    """Read the client's frames until it goes or its connection is kicked."""
    settings = services.settings
    strikes = _Strikes(settings.abuse_max_errors, settings.abuse_window_secs)
    typing = _TypingThrottle()
    inflight: set[asyncio.Future[tuple[StoredMessage, bool]]] = set()
    while connection.close_code is None:
        frame = await connection.websocket.receive()
        if frame["type"] == "websocket.disconnect":
            if frame.get("code") == CloseCode.TOO_MANY:
                # `chat.wsprotocol` closed it for sending frames too fast.
                services.abusive_socket(
                    connection.user, f"/ws/rooms/{connection.room}", "too many frames"
                )
            return
        text = frame.get("text")
        if text is None:
            error: ErrorFrame | None = events.error_frame(
                "invalid_message", "frames must be JSON text"
            )
        else:
            error = await _handle(text, connection, member, room_id, services, typing, inflight)
        if error is not None:
            _send_error(connection, error)
            if strikes.add():
                connection.kick(CloseCode.TOO_MANY, "too many bad frames")
                services.abusive_socket(
                    connection.user, f"/ws/rooms/{connection.room}", "too many bad frames"
                )
                return


def _send_error(connection: Connection, error: ErrorFrame) -> None:
    connection.push((0, events.encode(error)))


class _TypingThrottle:
    __slots__ = ("_last",)

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
    member: Author,
    room_id: int,
    services: Services,
    typing: _TypingThrottle,
    inflight: set[asyncio.Future[tuple[StoredMessage, bool]]],
) -> ErrorFrame | None:
    """Act on one client frame; the error frame to answer with, if any."""
    frame = parse_frame(text)
    if isinstance(frame, FrameError):
        return events.error_frame(frame.code, frame.detail, frame.nonce)
    if frame.type == "typing":
        if typing.allow():
            await services.publish(events.typing_event(connection.room, member.username))
        return None
    if not isinstance(frame, MessageFrame):
        return await _change(frame, connection, member, services)
    nonce = frame.nonce
    try:
        stored = await services.post_message(member, connection.room, room_id, frame.body, nonce)
    except RateLimited as exc:
        # Rounded up: retrying at the time given must succeed.
        retry_after = math.ceil(exc.retry_after_secs * 100) / 100
        return events.error_frame("rate_limited", str(exc), nonce, retry_after)
    except StorageUnavailable as exc:
        return events.error_frame("unavailable", str(exc), nonce)
    # Read on while the message waits for its commit, so that one client's messages
    # share commits too; the acknowledgement is the broadcast, after the commit.
    # One callback, not one each: the loop schedules every callback of every message.
    stored.add_done_callback(functools.partial(_acknowledge, connection, nonce, inflight))
    inflight.add(stored)
    if len(inflight) >= MAX_UNCOMMITTED_PER_SOCKET:
        await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
    return None


async def _change(
    frame: EditFrame | DeleteFrame | ReactFrame,
    connection: Connection,
    member: Author,
    services: Services,
) -> ErrorFrame | None:
    """An edit, deletion or reaction; its `update` event, to everyone in the room, is the
    acknowledgement."""
    changes, room = services.changes, connection.room
    try:
        who = await changes.who(member.id, member.username, member.username_key)
        if isinstance(frame, EditFrame):
            await changes.edit(who, room, frame.id, frame.body)
        elif isinstance(frame, DeleteFrame):
            await changes.delete(who, room, frame.id)
        else:
            await changes.react(who, room, frame.id, frame.emoji, frame.on)
    except RateLimited as exc:
        retry_after = math.ceil(exc.retry_after_secs * 100) / 100
        return events.error_frame("rate_limited", str(exc), retry_after=retry_after)
    except (MessageNotFound, RoomNotFound) as exc:
        return events.error_frame("not_found", str(exc))
    except Forbidden as exc:
        return events.error_frame("forbidden", str(exc))
    except Exception as exc:
        # The database may be briefly away: the socket lives on, the change is not made.
        log.warning("a change in %s failed: %r", room, exc)
        return events.error_frame("unavailable", str(StorageUnavailable()))
    return None


def _acknowledge(
    connection: Connection,
    nonce: str | None,
    inflight: set[asyncio.Future[tuple[StoredMessage, bool]]],
    stored: asyncio.Future[tuple[StoredMessage, bool]],
) -> None:
    """Answer the sender once its message's commit is over. A new message needs nothing
    here: its broadcast, with its nonce, is the acknowledgement."""
    inflight.discard(stored)
    if stored.cancelled():
        return
    if stored.exception() is not None:
        _send_error(connection, events.error_frame("unavailable", str(StorageUnavailable()), nonce))
        return
    message, is_new = stored.result()
    if not is_new:
        # A retry of a stored message: acknowledge it again, to the sender only.
        connection.push((0, events.encode(events.message_frame(message))))


async def me_socket(websocket: WebSocket) -> None:
    """`/ws/me`: one socket for all of a user's rooms (SPEC "Attention"): `activity`,
    `read`, `member` and `room` frames, after a first `ready`. The same admission as a room
    socket (origin, token, handshake rate: 1008, 4429), counted against the same number
    of sockets per user."""
    services = get_services(websocket)
    await websocket.accept()
    admitted_at = time.monotonic()
    try:
        found = await _admit(websocket, services)
        user = found.user
        sockets = services.hub.user_connections(user.username) + services.me.count(user.username)
        if sockets >= services.settings.max_connections_per_user:
            raise Refused(CloseCode.TOO_MANY, "too many connections")
    except Refused as refused:
        await _close(websocket, refused.code, refused.reason)
        return
    settings = services.settings
    # A connection of no room: the hub's buffers and slow-socket rules, outside its rooms.
    connection = Connection(
        websocket,
        "",
        user.username,
        found.claims.token_id,
        settings.send_queue_max,
        settings.send_buffer_max_bytes,
        found.claims.session_id,
    )
    connection.user_id, connection.token_key = user.id, found.claims.token_key
    expires_at = _expires_at(found)
    del user, found
    _forget_headers(websocket)
    services.me.add(connection)
    if services.deactivated_since(connection.user_id, admitted_at):
        services.me.remove(connection)
        await _close(websocket, CloseCode.UNAUTHENTICATED, DEACTIVATED_REASON)
        return
    reader = asyncio.current_task()
    connection.reader = reader
    services.last_seen.mark(connection.user_id)
    expiry = _expire(expires_at, connection.kick)
    try:
        ready: ReadyFrame = {"type": "ready", "user": connection.user}
        await websocket.send_text(events.encode(ready).decode())
        connection.start_sending()
        strikes = _Strikes(settings.abuse_max_errors, settings.abuse_window_secs)
        # The client has nothing to say here: every frame is answered with an error.
        while connection.close_code is None:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                if frame.get("code") == CloseCode.TOO_MANY:
                    services.abusive_socket(connection.user, "/ws/me", "too many frames")
                break
            _send_error(connection, events.error_frame("invalid_message", "/ws/me takes no frames"))
            if strikes.add():
                connection.kick(CloseCode.TOO_MANY, "too many bad frames")
                services.abusive_socket(connection.user, "/ws/me", "too many bad frames")
                break
    except asyncio.CancelledError:
        if connection.close_code is None or (reader is not None and reader.uncancel()):
            raise
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        connection.reader = None
        expiry.cancel()
        services.me.remove(connection)
        if connection.sender is not None:
            connection.sender.cancel()
            await asyncio.gather(connection.sender, return_exceptions=True)
        services.last_seen.mark(connection.user_id)
    if connection.close_code is not None:
        await connection.close()


async def admin_socket(websocket: WebSocket) -> None:
    """`/ws/admin`: the admins' live view of the rooms, for as long as its token stays
    valid and its user an admin."""
    services = get_services(websocket)
    await websocket.accept()
    admitted_at = time.monotonic()
    try:
        found = await _admit(websocket, services)
        if not found.user.is_admin:
            raise Refused(CloseCode.UNAUTHENTICATED, "admins only")
    except Refused as refused:
        await _close(websocket, refused.code, refused.reason)
        return
    task = asyncio.current_task()
    user = found.user
    view = AdminView(
        found.claims.token_id, task, found.claims.session_id, user.id, found.claims.token_key
    )
    services.admin_views.add(view)
    services.last_seen.mark(user.id)
    if services.deactivated_since(user.id, admitted_at):
        # Deactivated after the account was read, before `admin_views` could hear of it.
        view.kick(CloseCode.UNAUTHENTICATED, DEACTIVATED_REASON)
    # A sign-out, an ended session, a deactivation or a demotion reaches `view` at once
    # through the broker; expiry by this timer; anything else (a role changed in the
    # database by hand, the account deleted) is seen on the next refresh.
    expiry = _expire(_expires_at(found), view.kick)
    del user, found
    receiver = asyncio.create_task(_drain(websocket))
    try:
        while not receiver.done() and view.close_code is None:
            if not await _still_admin(services, websocket):
                view.kick(CloseCode.UNAUTHENTICATED, "no longer signed in as an admin")
                break
            changed = services.presence_changed
            # Figures first: the first frame of a view is always its stats.
            alerts = view.take_alerts()
            connections, rate, deliveries = await services.figures.totals()
            stats = events.stats_frame(
                await services.conversations.operator_view(await services.presence.snapshot()),
                connections,
                rate,
                services.loop_lag.take_max_ms(),
                deliveries,
            )
            await websocket.send_text(events.encode(stats).decode())
            for alert in alerts:
                await websocket.send_text(alert.decode())
            # A send to a closed socket raises, so a gone admin ends the loop.
            await _next_change(changed, view.alerts_waiting)
    except asyncio.CancelledError:
        # kick() ends the view this way; any other cancellation goes on.
        if view.close_code is None or (task is not None and task.uncancel()):
            raise
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        # From here on a kick no longer cancels: the cleanup below must run whole.
        view.task = None
        expiry.cancel()
        services.admin_views.remove(view)
        services.last_seen.mark(view.user_id)
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
    if view.close_code is not None:
        await _close(websocket, view.close_code, view.close_reason)


async def _next_change(presence: asyncio.Event, alerts: asyncio.Event) -> None:
    """Until presence changes, an alert waits, or it is time to refresh the figures."""
    waits = [asyncio.ensure_future(presence.wait()), asyncio.ensure_future(alerts.wait())]
    try:
        await asyncio.wait(waits, timeout=ADMIN_REFRESH_SECS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _still_admin(services: Services, websocket: WebSocket) -> bool:
    """Whether the token is still valid (not expired, its session live) and
    names an admin."""
    try:
        found = await _authenticate(websocket, services)
    except Exception as exc:
        # The database is briefly away: keep the view rather than throw the admin out.
        log.warning("admin view could not recheck its token: %s", exc)
        return True
    return found is not None and found.user.is_admin


async def _drain(websocket: WebSocket) -> None:
    """Read and ignore what an admin view sends, until it goes away."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


# Plain Starlette routes, dispatched by `chat.app.SocketRoutes` ahead of the HTTP
# middleware and FastAPI's own: a socket holds its whole call
# chain for as long as it is open, so each layer costs memory per socket.
routes = [
    WebSocketRoute("/ws/rooms/{name}", room_socket),
    WebSocketRoute("/ws/admin", admin_socket),
    WebSocketRoute("/ws/me", me_socket),
]
