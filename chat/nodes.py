"""Which server processes make up the cluster, for the `node_joined` and `node_left` alerts.

Each process beats in a Redis hash (its node name: until when it counts as alive) every
quarter of `CHAT_PRESENCE_TTL_SECS`, each beat good for three quarters of it (a busy
process may miss two beats); every process sweeps the hash as often, so a process that
dies without saying so is reported by the others within the TTL. Deleting the stale
entry is the claim: HDEL answers 1 to one sweeper only, so one process alone reports
the node gone.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

from chat.alerts import Alerts

log = logging.getLogger(__name__)


class ClusterNodes:
    def __init__(self, redis: Any, namespace: str, node: str, ttl_secs: float, alerts: Alerts):
        self._redis = redis
        self._key = f"{namespace}:node-beats"
        self._node = node
        self._ttl_secs = ttl_secs
        self._valid_secs = ttl_secs * 0.75
        self._interval_secs = ttl_secs / 4
        self._alerts = alerts
        # After Redis was away, nobody could beat: from when it is back, the others get a
        # TTL to beat again before they are taken for gone. From when it is back, not from
        # this process's last failed beat: another's failing call may have hung until its
        # timeout, and its next beat is a beat interval after that.
        self._sweep_after = 0.0
        self._redis_away = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await self._beat()
        self._alerts.raise_("node_joined", f"node {self._node} joined the cluster")
        self._task = asyncio.create_task(self._run(), name="node-beats")

    async def stop(self) -> None:
        """Leave, saying so."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._redis.hdel(self._key, self._node)
        await self._alerts.raise_now("node_left", f"node {self._node} stopped")

    async def _beat(self) -> None:
        until = time.time() + self._valid_secs
        await self._redis.hset(self._key, self._node, str(until))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_secs)
            try:
                await self._beat()
                if self._redis_away:
                    self._redis_away = False
                    self._sweep_after = time.monotonic() + self._ttl_secs
                if time.monotonic() >= self._sweep_after:
                    await self._sweep()
            except Exception as exc:
                log.warning("node beat failed: %s", exc)
                self._redis_away = True

    async def _sweep(self) -> None:
        now = time.time()
        for raw_node, raw_until in (await self._redis.hgetall(self._key)).items():
            node = raw_node.decode() if isinstance(raw_node, bytes) else str(raw_node)
            if node == self._node or float(raw_until) >= now:
                continue
            if await self._redis.hdel(self._key, node):
                self._alerts.raise_("node_left", f"node {node} stopped answering")
