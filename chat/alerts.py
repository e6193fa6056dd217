"""Alerts for operators (SPEC "Admin"): raised where something happens, pushed to every
admin view on every process through the broker, and kept in the database, newest
`KEEP_ALERTS`, for an admin who looks later.

One alert per incident: the noisy kinds (a sign-in throttled, an abusive socket closed)
are raised once per key (an address, a user) per `CHAT_ALERT_WINDOW_SECS`, across
processes when there is Redis. An alert raised while the database cannot store it
(`storage_unavailable` itself, first of all) is still pushed live, kept in memory, and
stored once the database takes writes again, which `storage_recovered` then says.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.errors import RateLimited
from chat.events import AlertControl, AlertFrame, AlertKind, AlertLevel, ControlEvent
from chat.messages import format_ts
from chat.models import Alert, utcnow
from chat.ratelimit import LoginThrottle

log = logging.getLogger(__name__)

LEVELS: dict[AlertKind, AlertLevel] = {
    "user_registered": "info",
    "login_throttled": "warning",
    "abuse_closed": "warning",
    "storage_unavailable": "critical",
    "storage_recovered": "info",
    "broker_down": "critical",
    "broker_up": "info",
    "node_joined": "info",
    "node_left": "warning",
}
# Stored alerts beyond this many, oldest first, are deleted.
KEEP_ALERTS = 1000
ALERTS_DEFAULT_LIMIT = 100
ALERTS_MAX_LIMIT = 500
# Alerts waiting in memory for the database; past this, the oldest are dropped.
PENDING_MAX = 200
# How often a process whose database failed tries it again.
STORAGE_PROBE_SECS = 1.0
DETAIL_MAX_CHARS = 512
# Noisy alerts' keys remembered before the expired ones are swept out.
RECENT_MAX = 4096

PublishControl = Callable[[ControlEvent], Awaitable[None]]
# Whether the database takes writes now.
Probe = Callable[[], Awaitable[bool]]


def alert_frame(row: Alert) -> AlertFrame:
    return {
        "type": "alert",
        "id": row.id,
        "level": row.level,  # type: ignore[typeddict-item]
        "kind": row.kind,  # type: ignore[typeddict-item]
        "detail": row.detail,
        "ts": format_ts(row.ts),
    }


async def recent(session: AsyncSession, limit: int) -> list[AlertFrame]:
    """The newest `limit` alerts, newest first."""
    rows = await session.scalars(
        select(Alert).order_by(Alert.ts.desc(), Alert.seq.desc()).limit(limit)
    )
    return [alert_frame(row) for row in rows]


class Alerts:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publish_control: PublishControl,
        probe: Probe,
        window_secs: float,
        redis: object | None = None,
        namespace: str = "chat",
    ) -> None:
        self._sessions = sessions
        self._publish = publish_control
        self._probe = probe
        self._window_secs = window_secs
        self._redis = redis
        self._namespace = namespace
        # (kind, key) of noisy alerts raised lately here, and until when (monotonic).
        self._recent: dict[tuple[str, str], float] = {}
        # Raised while the database could not store them, oldest first.
        self._pending: list[tuple[AlertFrame, datetime]] = []
        self._storage_down = False
        self._watch: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def raise_(self, kind: AlertKind, detail: str, key: str | None = None) -> None:
        """Raise an alert in the background, so that the request or socket that saw it
        does not wait. With `key`, only the first per key and window is raised."""
        task = asyncio.create_task(self.raise_now(kind, detail, key), name=f"alert-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def raise_now(self, kind: AlertKind, detail: str, key: str | None = None) -> None:
        try:
            if key is not None and not await self._first_in_window(kind, key):
                return
            ts = utcnow()
            frame: AlertFrame = {
                "type": "alert",
                "id": uuid.uuid4().hex,
                "level": LEVELS[kind],
                "kind": kind,
                "detail": detail[:DETAIL_MAX_CHARS],
                "ts": format_ts(ts),
            }
            control: AlertControl = {"type": "alert", "alert": frame}
            await self._publish(control)
            await self._store(frame, ts)
        except Exception:
            log.exception("raising a %s alert failed", kind)

    async def stop(self) -> None:
        """Finish raising what was raised; stop watching the database."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    def storage_failed(self, detail: str) -> None:
        """The database failed a write (or a health check): say so once, and watch for it
        to come back."""
        if self._storage_down:
            return
        self._storage_down = True
        self.raise_("storage_unavailable", f"the database cannot store writes: {detail}")
        self._watch = asyncio.create_task(self._watch_storage(), name="storage-watch")

    async def _first_in_window(self, kind: str, key: str) -> bool:
        """Whether this is the first (kind, key) of its window: asked of this process's
        memory first, so that a flood of refusals costs Redis one call per window."""
        now = time.monotonic()
        if len(self._recent) > RECENT_MAX:
            self._recent = {k: until for k, until in self._recent.items() if until > now}
        if self._recent.get((kind, key), 0.0) > now:
            return False
        self._recent[(kind, key)] = now + self._window_secs
        if self._redis is None:
            return True
        name = f"{self._namespace}:alert:{kind}:{key}"
        window_ms = max(1, int(self._window_secs * 1000))
        try:
            return bool(await self._redis.set(name, 1, nx=True, px=window_ms))  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("alert window of this process only: %s", exc)
            return True

    async def _store(self, frame: AlertFrame, ts: datetime) -> None:
        if self._storage_down:
            self._keep(frame, ts)
            return
        try:
            await self._insert([(frame, ts)])
        except Exception as exc:
            self._keep(frame, ts)
            self.storage_failed(type(exc).__name__)

    def _keep(self, frame: AlertFrame, ts: datetime) -> None:
        self._pending.append((frame, ts))
        del self._pending[:-PENDING_MAX]

    async def _insert(self, alerts: list[tuple[AlertFrame, datetime]]) -> None:
        async with self._sessions() as session:
            session.add_all(
                Alert(id=f["id"], level=f["level"], kind=f["kind"], detail=f["detail"], ts=ts)
                for f, ts in alerts
            )
            await session.flush()
            newest = select(Alert.seq).order_by(Alert.ts.desc(), Alert.seq.desc())
            await session.execute(
                delete(Alert).where(Alert.seq.not_in(newest.limit(KEEP_ALERTS).scalar_subquery()))
            )
            await session.commit()

    async def _watch_storage(self) -> None:
        """Until the database takes writes again: then store what waited, and say so."""
        while True:
            await asyncio.sleep(STORAGE_PROBE_SECS)
            try:
                if not await self._probe():
                    continue
                waiting = list(self._pending)
                await self._insert(waiting)
            except Exception as exc:
                log.info("storage still unavailable: %s", exc)
                continue
            self._pending = [p for p in self._pending if p not in waiting]
            self._storage_down = False
            self._watch = None
            if self._pending:
                # Raised while the first ones were being stored.
                with contextlib.suppress(Exception):
                    await self._insert(self._pending)
                self._pending = []
            await self.raise_now("storage_recovered", "the database stores writes again")
            return


class AlertingLoginThrottle:
    """A login throttle that raises `login_throttled` when it refuses a sign-in: once per
    client address and window, however many guesses follow."""

    def __init__(self, throttle: LoginThrottle, alerts: Alerts) -> None:
        # The throttle that decides; this one only tells the admins.
        self.inner = throttle
        self._alerts = alerts

    async def check(self, username_key: str, address: str) -> None:
        try:
            await self.inner.check(username_key, address)
        except RateLimited:
            account = username_key or "(no such name)"
            self._alerts.raise_(
                "login_throttled",
                f"sign-ins from {address} refused after repeated failures (account {account})",
                address,
            )
            raise

    async def failed(self, username_key: str, address: str) -> None:
        await self.inner.failed(username_key, address)

    async def succeeded(self, username_key: str, address: str) -> None:
        await self.inner.succeeded(username_key, address)
