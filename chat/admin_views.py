"""This process's open `/ws/admin` sockets, so that a sign-out, a deactivation or a lost
role can close them at once."""

import asyncio
from collections.abc import Collection

from chat.closecodes import CloseCode


class AdminView:
    """One admin socket. Its handler runs in `task`, which `kick` cancels to end it."""

    __slots__ = (
        "alerts",
        "alerts_waiting",
        "close_code",
        "close_reason",
        "session_id",
        "task",
        "token_id",
        "token_key",
        "user_id",
    )

    def __init__(
        self,
        token_id: str,
        task: asyncio.Task[None] | None,
        session_id: str = "",
        user_id: int = 0,
        token_key: str = "",
    ) -> None:
        self.token_id = token_id
        self.session_id = session_id
        self.task = task
        self.user_id = user_id
        # The account key its token carried.
        self.token_key = token_key
        self.close_code: int | None = None
        self.close_reason = ""
        # Alert frames, encoded, that its handler has yet to send; set when there are some.
        self.alerts: list[bytes] = []
        self.alerts_waiting = asyncio.Event()

    def take_alerts(self) -> list[bytes]:
        alerts, self.alerts = self.alerts, []
        self.alerts_waiting.clear()
        return alerts

    def kick(self, code: int, reason: str) -> None:
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class AdminViews:
    def __init__(self) -> None:
        self._views: set[AdminView] = set()

    def add(self, view: AdminView) -> None:
        self._views.add(view)

    def remove(self, view: AdminView) -> None:
        self._views.discard(view)

    def all(self) -> list[AdminView]:
        return list(self._views)

    def push(self, alert: bytes) -> None:
        """Hand an alert frame to every admin socket here."""
        for view in self._views:
            view.alerts.append(alert)
            view.alerts_waiting.set()

    def session_ids(self) -> set[str]:
        return {view.session_id for view in self._views}

    def kick_sessions(self, session_ids: Collection[str]) -> None:
        """Close every admin socket of one of these sessions (1008)."""
        for view in list(self._views):
            if view.session_id in session_ids:
                view.kick(CloseCode.UNAUTHENTICATED, "session ended")

    def kick_user(self, user_id: int, reason: str) -> None:
        """Close every admin socket of the account `user_id` (1008)."""
        for view in list(self._views):
            if view.user_id == user_id:
                view.kick(CloseCode.UNAUTHENTICATED, reason)
