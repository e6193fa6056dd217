"""The dashboard's history (SPEC "Admin"): each process stores its own figures once a
minute (open sockets, messages stored and frames delivered per second, event-loop lag
p99), the last day of them is kept, and `GET /api/admin/stats/history` reads them per
node and in total.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.messages import format_ts
from chat.models import StatsPoint

log = logging.getLogger(__name__)

KEEP = timedelta(hours=24)
HISTORY_DEFAULT_MINUTES = 60
HISTORY_MAX_MINUTES = 1440


@dataclass(frozen=True, slots=True)
class Counters:
    """What a process has counted since it started, read at the end of each period."""

    connections: int
    messages: int
    deliveries: int
    loop_lag_p99_ms: float


class StatsHistory:
    """Writes this process's point at the end of every period (a minute, but for tests)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        node: str,
        read: Callable[[], Counters],
        period_secs: float = 60.0,
    ) -> None:
        self._sessions = sessions
        self._node = node
        self._read = read
        self._period_secs = period_secs
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stats-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        last = self._read()
        while True:
            # Points fall on whole periods of the wall clock, so that every node's line up.
            now = time.time()
            await asyncio.sleep(self._period_secs - now % self._period_secs)
            counters = self._read()
            start = datetime.fromtimestamp(
                time.time() // self._period_secs * self._period_secs - self._period_secs, UTC
            )
            point = StatsPoint(
                minute=start,
                node=self._node,
                connections=counters.connections,
                messages_per_sec=round((counters.messages - last.messages) / self._period_secs, 3),
                deliveries_per_sec=round(
                    (counters.deliveries - last.deliveries) / self._period_secs, 3
                ),
                loop_lag_p99_ms=round(counters.loop_lag_p99_ms, 2),
            )
            last = counters
            try:
                async with self._sessions() as session:
                    await session.merge(point)
                    await session.execute(
                        delete(StatsPoint).where(StatsPoint.minute < start - KEEP)
                    )
                    await session.commit()
            except Exception as exc:
                log.warning("figures of %s not stored: %s", format_ts(start), exc)


def _point(row: StatsPoint) -> dict[str, float | int | str]:
    return {
        "ts": format_ts(row.minute),
        "connections": row.connections,
        "messages_per_sec": row.messages_per_sec,
        "deliveries_per_sec": row.deliveries_per_sec,
        "loop_lag_p99_ms": row.loop_lag_p99_ms,
    }


async def read(
    session: AsyncSession, minutes: int
) -> tuple[dict[str, list[dict[str, float | int | str]]], list[dict[str, float | int | str]]]:
    """Every node's points of the last `minutes`, oldest first, and their totals per
    point: sums, but the worst lag (percentiles do not add up)."""
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    rows = await session.scalars(
        select(StatsPoint).where(StatsPoint.minute >= since).order_by(StatsPoint.minute)
    )
    nodes: dict[str, list[dict[str, float | int | str]]] = {}
    totals: dict[datetime, dict[str, float | int | str]] = {}
    for row in rows:
        nodes.setdefault(row.node, []).append(_point(row))
        total = totals.get(row.minute)
        if total is None:
            totals[row.minute] = _point(row)
            continue
        total["connections"] = int(total["connections"]) + row.connections
        for name, value in (
            ("messages_per_sec", row.messages_per_sec),
            ("deliveries_per_sec", row.deliveries_per_sec),
        ):
            total[name] = round(float(total[name]) + value, 3)
        total["loop_lag_p99_ms"] = max(float(total["loop_lag_p99_ms"]), row.loop_lag_p99_ms)
    return dict(sorted(nodes.items())), [totals[minute] for minute in sorted(totals)]
