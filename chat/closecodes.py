"""Every close code a WebSocket of this server can end with, and what it tells the client."""

from enum import IntEnum


class CloseCode(IntEnum):
    # The peer's sending failed or the server let go of it; reconnect.
    GOING_AWAY = 1001
    # Authentication only: missing, invalid or expired token, ended session,
    # deactivated account, foreign origin. The client signs in again.
    UNAUTHENTICATED = 1008
    # A frame over CHAT_WS_MAX_FRAME_BYTES (uvicorn closes with it).
    TOO_BIG = 1009
    # The server is shutting down or restarting: reconnect with `since`.
    RESTARTING = 1012
    # The socket could not keep up with its room: reconnect with `since`.
    TOO_SLOW = 1013
    # `since` is not a message id.
    BAD_REQUEST = 4400
    # Not allowed in the room: banned, or removed while connected. Do not reconnect.
    FORBIDDEN = 4403
    # No such room, or one the user may not know of.
    NOT_FOUND = 4404
    # Too many sockets for the user, or persistent abuse: do not reconnect at once.
    TOO_MANY = 4429
