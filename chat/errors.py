"""Domain errors. Only the HTTP routes and the WebSocket handlers turn them into codes."""


class ChatError(Exception):
    """Base of every error the domain raises on purpose."""


class UsernameTaken(ChatError):
    def __str__(self) -> str:
        return "username already taken, or too like one that is"


class RegistrationRefused(ChatError):
    """Registration is not open, and no usable invite came with the request."""

    def __init__(self, invite_given: bool, closed: bool) -> None:
        super().__init__(invite_given, closed)
        self.invite_given = invite_given
        self.closed = closed

    def __str__(self) -> str:
        if self.invite_given:
            return "that invite is unknown, used up or expired"
        if self.closed:
            return "registration is closed: accounts are made by the admins, or by invite"
        return "registration needs an invite from an admin"


class InviteNotFound(ChatError):
    def __str__(self) -> str:
        return "invite not found"


class UserNotFound(ChatError):
    def __str__(self) -> str:
        return "user not found"


class LastActiveAdmin(ChatError):
    def __str__(self) -> str:
        return "the last active admin cannot be deactivated or demoted"


class RoomExists(ChatError):
    def __str__(self) -> str:
        return "room already exists"


class RoomQuotaReached(ChatError):
    def __init__(self, quota: int) -> None:
        super().__init__(quota)
        self.quota = quota

    def __str__(self) -> str:
        return f"room limit reached: an account may create at most {self.quota} rooms"


class RoomNotFound(ChatError):
    def __str__(self) -> str:
        return "room not found"


class Forbidden(ChatError):
    """Not allowed in a room the user may know of; the reason says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class NotAMember(ChatError):
    def __str__(self) -> str:
        return "that user is not a member of the room"


class LastOwner(ChatError):
    def __str__(self) -> str:
        return "a room keeps at least one owner: make someone else owner first"


class RateLimited(ChatError):
    def __init__(self, retry_after_secs: float) -> None:
        super().__init__(retry_after_secs)
        self.retry_after_secs = retry_after_secs

    def __str__(self) -> str:
        return f"rate limited, retry in {self.retry_after_secs:.1f}s"


class StorageUnavailable(ChatError):
    def __str__(self) -> str:
        return "message storage is unavailable, try again"


class MessageNotFound(ChatError):
    """No such message in the room, or a deleted one (nothing of it is left to change)."""

    def __str__(self) -> str:
        return "message not found"
