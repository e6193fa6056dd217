"""Prometheus metrics: what `GET /metrics` shows, and the cheap hooks that feed it.

The hot paths never touch a metric per frame. The writer counts each commit once
(`chat_messages_stored_total`, `chat_db_commit_seconds`); the hub counts once per
fan-out (`Hub.deliveries`, whose running total is carried into the counter when
the metrics are refreshed); gauges are read from the services when refreshed, not kept
up to date on every connect and disconnect.

Under `chat serve --workers N` every worker is its own process, and a scrape reaches
one of them. So the workers run prometheus_client's multiprocess mode: each writes
its values to files of its own in `PROMETHEUS_MULTIPROC_DIR` (memory-mapped, so that
a write stays cheap), and the worker that is scraped adds up every worker's files.
Each worker refreshes its gauges and delivery count every `SAMPLE_SECS`.
"""

import asyncio
import hashlib
import hmac
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy.engine import Dialect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat.db import Transactions, Work

if TYPE_CHECKING:
    from chat.services import Services

__all__ = ["CONTENT_TYPE_LATEST", "HttpMetrics", "Metrics", "TimedTransactions"]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often each worker writes its gauges and delivery count, in multiprocess mode.
SAMPLE_SECS = 1.0
BROKER_CHECK_TIMEOUT_SECS = 2.0
# The loop-lag probe wakes every 10 ms: most samples are well under a millisecond.
LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# One commit holds up to 512 messages and an fsync.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A worker's files of gauges that count only while it lives (see `_forget_dead_workers`).
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")

T = TypeVar("T")


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir() -> Path:
    """Before `chat serve` starts its workers: the directory where they keep their values,
    empty, named in the environment they inherit. The operator's `PROMETHEUS_MULTIPROC_DIR`
    if set (emptied of metric files: values of an earlier run would add to this run's),
    else a private temporary directory removed when the server exits."""
    path = multiprocess_dir()
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="chat-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def remove_multiprocess_dir(path: Path) -> None:
    """After `chat serve`: remove the directory `prepare_multiprocess_dir` made."""
    if path.name.startswith("chat-metrics-"):
        shutil.rmtree(path, ignore_errors=True)


class Metrics:
    """This server's metrics, in a registry of its own (tests run several servers in one
    process; each must count only its own)."""

    def __init__(self) -> None:
        self.multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry()
        registry = self.registry
        self.connections = Gauge(
            "chat_connections",
            "Open WebSocket connections, by kind: room, me (/ws/me) or admin (/ws/admin)",
            ["kind"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.messages_stored = Counter(
            "chat_messages_stored", "Messages stored (committed)", registry=registry
        )
        self.deliveries = Counter(
            "chat_deliveries",
            "Room frames handed to sockets: one per receiving socket",
            registry=registry,
        )
        self.loop_lag = Histogram(
            "chat_event_loop_lag_seconds",
            "How late the event loop woke a 10 ms timer",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self.db_commit = Histogram(
            "chat_db_commit_seconds",
            "Duration of each write transaction (a batch of messages, an edit, a reaction)",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.broker_up = Gauge(
            "chat_broker_up",
            "1 while the broker (Redis, or the in-process one) answers; 0 if any worker's does not",
            registry=registry,
            multiprocess_mode="livemin",
        )
        http_responses = Counter(
            "chat_http_responses",
            "HTTP responses, by status class (2xx, 4xx, ...)",
            ["code"],
            registry=registry,
        )
        # One child per status class, looked up once, not per request.
        self.http_by_class = {c: http_responses.labels(f"{c}xx") for c in range(1, 6)}
        if self.multiprocess_dir is None:
            # Memory and CPU of this process; in multiprocess mode they would describe
            # only the worker that happens to be scraped.
            ProcessCollector(registry=registry)
        self._delivered = 0
        self._sampler: asyncio.Task[None] | None = None

    def start(self, services: "Services") -> None:
        if self.multiprocess_dir is not None:
            self._sampler = asyncio.create_task(self._sample(services), name="metrics-sampler")

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        if self.multiprocess_dir is not None:
            # This worker's live gauges no longer count; its counters stay in the totals.
            multiprocess.mark_process_dead(os.getpid(), str(self.multiprocess_dir))

    async def refresh(self, services: "Services") -> None:
        """Carry this process's figures into the metrics."""
        delivered = services.hub.deliveries.total
        self.deliveries.inc(delivered - self._delivered)
        self._delivered = delivered
        self.connections.labels("room").set(services.hub.connections)
        self.connections.labels("me").set(sum(1 for _ in services.me.all()))
        self.connections.labels("admin").set(sum(1 for _ in services.admin_views.all()))
        try:
            async with asyncio.timeout(BROKER_CHECK_TIMEOUT_SECS):
                up = await services.broker.is_healthy()
        except TimeoutError:
            up = False
        self.broker_up.set(1 if up else 0)

    async def _sample(self, services: "Services") -> None:
        while True:
            try:
                await self.refresh(services)
            except Exception as exc:
                log.warning("refreshing metrics failed: %s", exc)
            await asyncio.sleep(SAMPLE_SECS)

    def exposition(self) -> bytes:
        """The text format of every metric (blocking: reads the workers' files)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        _forget_dead_workers(self.multiprocess_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(self.multiprocess_dir))
        return generate_latest(registry)


def _forget_dead_workers(path: Path) -> None:
    """A worker that died without shutting down (killed, crashed) left its live gauges:
    its connections would count forever. Its counters and histograms stay: totals never
    go backwards."""
    for file in path.iterdir():
        match = _LIVE_GAUGE_FILE.match(file.name)
        if match is None:
            continue
        pid = int(match[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(path))
        except PermissionError:
            pass  # Alive, under another user.


def token_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header is `Bearer <token>`, compared in constant time
    (digests first, so that not even the length of the token shows)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    given = hashlib.sha256(credentials.strip().encode()).digest()
    return hmac.compare_digest(given, hashlib.sha256(token.encode()).digest())


class TimedTransactions:
    """The message writer's transactions, each one timed into `chat_db_commit_seconds`."""

    def __init__(self, inner: Transactions, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram

    @property
    def dialect(self) -> Dialect:
        return self._inner.dialect

    @property
    def integrity_error(self) -> type[Exception]:
        return self._inner.integrity_error

    async def run(self, work: Work[T]) -> T:
        started = time.perf_counter()
        try:
            return await self._inner.run(work)
        finally:
            self._histogram.observe(time.perf_counter() - started)

    async def close(self) -> None:
        await self._inner.close()


class HttpMetrics:
    """Counts HTTP responses by status class (`chat_http_responses_total`)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.by_class = metrics.http_by_class

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                child = self.by_class.get(message["status"] // 100)
                if child is not None:
                    child.inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            # The 500 that Starlette's outermost error handler is about to send.
            if not started:
                self.by_class[5].inc()
            raise
