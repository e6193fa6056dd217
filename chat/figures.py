"""Live figures over every server process: open sockets, messages stored and frames
delivered per second.

`ProcessFigures` knows this process only. `ClusterFigures` shares them through Redis:
each process writes its own figures into the `nodes` hash about once a second, each
entry valid for a few intervals, and reading adds up the entries still valid, so a
process that dies stops counting soon after.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import orjson

log = logging.getLogger(__name__)

# This process's live figures: (open sockets, messages stored per second, deliveries per second).
Totals = tuple[int, float, float]
LocalFigures = Callable[[], Totals]
FIGURES_INTERVAL_SECS = 1.0


class Figures(Protocol):
    async def start(self, local: LocalFigures) -> None: ...

    async def stop(self) -> None: ...

    async def totals(self) -> Totals:
        """Open sockets, messages stored and deliveries per second, over every process."""


class ProcessFigures:
    """One process: its own figures are the totals."""

    def __init__(self) -> None:
        self._local: LocalFigures = lambda: (0, 0.0, 0.0)

    async def start(self, local: LocalFigures) -> None:
        self._local = local

    async def stop(self) -> None:
        pass

    async def totals(self) -> Totals:
        return self._local()


class ClusterFigures:
    """Every process's figures, shared through a hash in Redis."""

    def __init__(self, redis: Any, namespace: str) -> None:
        self._redis = redis
        self._nodes_key = f"{namespace}:nodes"
        self._node = uuid.uuid4().hex
        self._local: LocalFigures = lambda: (0, 0.0, 0.0)
        self._task: asyncio.Task[None] | None = None

    async def start(self, local: LocalFigures) -> None:
        self._local = local
        self._task = asyncio.create_task(self._report(), name="figures-report")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._redis.hdel(self._nodes_key, self._node)

    async def totals(self) -> Totals:
        now = time.time()
        try:
            nodes = await self._redis.hgetall(self._nodes_key)
        except Exception as exc:
            log.warning("figures of this process only: %s", exc)
            return self._local()
        # This process's own figures fresh, the others' as last reported.
        total_connections, total_rate, total_deliveries = self._local()
        stale = []
        for node, raw in nodes.items():
            if (node.decode() if isinstance(node, bytes) else node) == self._node:
                continue
            figures = orjson.loads(raw)
            if figures["until"] < now:
                stale.append(node)
                continue
            total_connections += figures["connections"]
            total_rate += figures["rate"]
            total_deliveries += figures.get("deliveries", 0.0)
        if stale:
            with contextlib.suppress(Exception):
                await self._redis.hdel(self._nodes_key, *stale)
        return total_connections, total_rate, total_deliveries

    async def _report(self) -> None:
        while True:
            connections, rate, deliveries = self._local()
            mine = {
                "connections": connections,
                "rate": rate,
                "deliveries": deliveries,
                "until": time.time() + FIGURES_INTERVAL_SECS * 5,
            }
            try:
                await self._redis.hset(self._nodes_key, self._node, orjson.dumps(mine))
            except Exception as exc:
                log.warning("figures not shared: %s", exc)
            await asyncio.sleep(FIGURES_INTERVAL_SECS)
