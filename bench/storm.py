"""The load generator's `storm` mode: room sockets that come back after a server restart.

Each socket behaves as the browser's room page does (static/room.js): it keeps the
newest message id it has seen, and when its socket closes (1012 on a restart) or a
connect fails, it waits a jittered back-off (static/backoff.js: anywhere from nothing to
base·2^attempt, capped) and reconnects with `?since=<that id>`; a welcome resets the
attempts. Every message id a socket is handed, in a welcome or live, is kept, so that
what was missed or handed twice can be counted.

Lines on stdin and stdout, after the job:
- out `{"opened", "failed", "errors", "connect_secs"}` once every socket has its first
  welcome;
- in `{"expected": {room: [id, ...]}, "timeout": secs}` once the server has restarted
  and the messages are posted; the sockets get until every one of them has all its
  room's expected ids, or the timeout;
- out the report (the job's result).
"""

import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

# static/room.js: RECONNECT_BASE_MS, RECONNECT_CAP_MS.
BACKOFF_BASE_SECS = 0.5
BACKOFF_CAP_SECS = 10.0
# Close codes after which the page does not just come back (sign in again, shut out, or a
# long wait): a storm socket counts them as refusals.
REFUSALS = {1008, 4403, 4404, 4429}
CONNECT_BATCH = 100
OPEN_TIMEOUT_SECS = 60.0


def backoff_secs(attempt: int) -> float:
    return random.random() * min(BACKOFF_CAP_SECS, BACKOFF_BASE_SECS * 2**attempt)


@dataclass
class StormSocket:
    index: int
    url: str
    room: str
    token: str
    local_addr: str | None
    # Every message id handed to this socket, in order, duplicates included.
    seen: list[int] = field(default_factory=list)
    newest: int | None = None
    welcomes: int = 0
    # time.time() of the welcome after the restart, and the connects it took.
    back_at: float | None = None
    attempts: int = 0
    failed_connects: int = 0
    refused: str | None = None
    resumed_with_since: bool = False
    ws: ClientConnection | None = None
    first_welcome: asyncio.Event = field(default_factory=asyncio.Event)
    has_all: asyncio.Event = field(default_factory=asyncio.Event)
    wanted: set[int] | None = None

    def take(self, message_id: int) -> None:
        self.seen.append(message_id)
        if self.newest is None or message_id > self.newest:
            self.newest = message_id
        self.check()

    def check(self) -> None:
        if self.wanted is not None and self.wanted.issubset(self.seen):
            self.has_all.set()

    async def run(self, stopping: asyncio.Event) -> None:
        attempt = 0
        while not stopping.is_set():
            query = f"?since={self.newest}" if self.newest is not None else ""
            kwargs: dict[str, Any] = {}
            if self.local_addr:
                kwargs["local_addr"] = (self.local_addr, 0)
            self.attempts += 1
            try:
                ws = await connect(
                    f"{self.url}/ws/rooms/{self.room}{query}",
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    max_size=None,
                    open_timeout=OPEN_TIMEOUT_SECS,
                    ping_interval=None,
                    close_timeout=2,
                    compression=None,
                    **kwargs,
                )
            except (OSError, InvalidHandshake, TimeoutError):
                self.failed_connects += 1
                await asyncio.sleep(backoff_secs(attempt))
                attempt += 1
                continue
            self.ws = ws
            code = await self._read(ws, bool(query))
            self.ws = None
            if code in REFUSALS:
                self.refused = f"close {code}"
                return
            if stopping.is_set():
                return
            await asyncio.sleep(backoff_secs(attempt))
            attempt += 1
        return

    async def _read(self, ws: ClientConnection, with_since: bool) -> int | None:
        """Read frames until the socket closes; its close code."""
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                kind = frame.get("type")
                if kind == "message":
                    self.take(frame["id"])
                elif kind == "welcome":
                    self.welcomes += 1
                    if self.welcomes == 1:
                        self.first_welcome.set()
                    else:
                        self.back_at = time.time()
                        self.resumed_with_since = with_since
                    for message in frame.get("history", ()):
                        self.take(message["id"])
        except ConnectionClosed:
            pass
        return ws.close_code


async def run_storm(job: dict[str, Any]) -> dict[str, Any]:
    first, count = job.get("first", 0), job["members"]
    urls, rooms, tokens = job["urls"], job["rooms"], job["tokens"]
    addrs = job.get("local_addrs") or [None]
    sockets = [
        StormSocket(
            i,
            urls[i % len(urls)],
            rooms[i % len(rooms)],
            tokens[i % len(tokens)],
            addrs[i % len(addrs)],
        )
        for i in range(first, first + count)
    ]
    stopping = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        # The first connects in batches, as the page loads of a day come in, not a storm.
        for at in range(0, count, CONNECT_BATCH):
            batch = sockets[at : at + CONNECT_BATCH]
            tasks += [asyncio.create_task(s.run(stopping)) for s in batch]
            waits = [asyncio.create_task(s.first_welcome.wait()) for s in batch]
            _done, pending = await asyncio.wait(waits, timeout=OPEN_TIMEOUT_SECS)
            for task in pending:
                task.cancel()
        opened = sum(s.first_welcome.is_set() for s in sockets)
        print(
            json.dumps(
                {
                    "opened": opened,
                    "failed": count - opened,
                    "connect_secs": time.monotonic() - started,
                }
            ),
            flush=True,
        )
        line = await loop.run_in_executor(None, sys.stdin.readline)
        order = json.loads(line)
        expected: dict[str, list[int]] = order["expected"]
        for s in sockets:
            s.wanted = set(expected.get(s.room, ()))
            s.check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(s.has_all.wait() for s in sockets)), order["timeout"]
            )
    finally:
        stopping.set()
        for s in sockets:
            if s.ws is not None:
                s.ws.transport.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    missed = duplicated = 0
    for s in sockets:
        wanted = s.wanted or set()
        missed += len(wanted.difference(s.seen))
        duplicated += len(s.seen) - len(set(s.seen))
    back = [s.back_at for s in sockets if s.back_at is not None]
    return {
        "sockets": count,
        "opened": opened,
        "back": len(back),
        "back_with_since": sum(s.resumed_with_since for s in sockets),
        "first_back_at": min(back, default=None),
        "last_back_at": max(back, default=None),
        "back_at": sorted(back),
        "expected_deliveries": sum(len(s.wanted or ()) for s in sockets),
        "missed": missed,
        "duplicated": duplicated,
        "refused": sum(s.refused is not None for s in sockets),
        "failed_connects": sum(s.failed_connects for s in sockets),
        "connects": sum(s.attempts for s in sockets),
    }
