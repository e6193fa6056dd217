"""The load generator: its own process, so that it does not share the server's core.

Reads a JSON job on stdin, opens the room's member sockets, publishes at a fixed
rate (open loop: a slow server does not slow the sender down), and prints what it
measured as JSON on stdout.
"""

import asyncio
import contextlib
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

CONNECT_BATCH = 50
MARK = b'"body":"bench|'
DRAIN_SECS = 5.0


@dataclass
class Tally:
    deliveries: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    first_at: float = 0.0
    last_at: float = 0.0
    expected: int = 0
    all_in: asyncio.Event = field(default_factory=asyncio.Event)


async def member(ws: ClientConnection, tally: Tally, stop: asyncio.Event) -> None:
    # Bytes, not parsed JSON: the load generator must cost far less per frame than
    # the server, or it would measure itself.
    while True:
        raw = await ws.recv(decode=False)
        now = time.time()
        start = raw.find(MARK)
        if start < 0:
            continue
        start += len(MARK)
        sent_at = float(raw[start : raw.index(b"|", start)])
        tally.deliveries += 1
        tally.latencies_ms.append((now - sent_at) * 1000)
        tally.first_at = tally.first_at or now
        tally.last_at = now
        if tally.deliveries == tally.expected:
            tally.all_in.set()
        if stop.is_set():
            return


async def open_socket(url: str, token: str) -> ClientConnection:
    ws = await connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=None,
        open_timeout=60,
        ping_interval=None,
        compression=None,
    )
    welcome = orjson.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws


async def sender(ws: ClientConnection, rate: float, duration: float, index: int) -> int:
    interval = 1.0 / rate
    start = time.monotonic()
    sent = 0
    pad = "x" * 60
    while (elapsed := time.monotonic() - start) < duration:
        body = f"bench|{time.time():.6f}|{index}-{sent}|{pad}"
        await ws.send(json.dumps({"type": "message", "body": body}))
        sent += 1
        next_at = sent * interval
        if next_at > elapsed:
            await asyncio.sleep(next_at - elapsed)
    return sent


async def run(job: dict[str, Any]) -> dict[str, Any]:
    urls, tokens = job["urls"], job["tokens"]
    room = job["room"]
    sockets: list[ClientConnection] = []
    for start in range(0, job["members"], CONNECT_BATCH):
        batch = range(start, min(start + CONNECT_BATCH, job["members"]))
        sockets += await asyncio.gather(
            *(
                open_socket(f"{urls[i % len(urls)]}/ws/rooms/{room}", tokens[i % len(tokens)])
                for i in batch
            )
        )
    sender_urls = job.get("sender_urls") or urls
    senders = [
        await open_socket(
            f"{sender_urls[i % len(sender_urls)]}/ws/rooms/{room}", tokens[i % len(tokens)]
        )
        for i in range(job["senders"])
    ]
    tally = Tally()
    stop = asyncio.Event()
    readers = [asyncio.create_task(member(ws, tally, stop)) for ws in sockets]
    drains = [asyncio.create_task(_discard(ws)) for ws in senders]
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    sent = sum(
        await asyncio.gather(
            *(
                sender(ws, job["rate"] / len(senders), job["duration"], i)
                for i, ws in enumerate(senders)
            )
        )
    )
    send_secs = time.monotonic() - started
    expected = tally.expected = sent * job["members"]
    if tally.deliveries < expected:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.all_in.wait(), DRAIN_SECS)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    for task in readers + drains:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets + senders), return_exceptions=True)
    cpu_secs = (cpu_after.ru_utime + cpu_after.ru_stime) - (
        cpu_before.ru_utime + cpu_before.ru_stime
    )
    window = max(tally.last_at - tally.first_at, send_secs)
    return {
        "sent": sent,
        "expected": expected,
        "delivered": tally.deliveries,
        "deliveries_per_sec": tally.deliveries / window if window else 0.0,
        "latencies_ms": sorted(tally.latencies_ms),
        "loadgen_cpu_share": cpu_secs / (time.monotonic() - started),
    }


async def _discard(ws: ClientConnection) -> None:
    async for _ in ws:
        pass


def main() -> None:
    job = json.load(sys.stdin)
    try:
        from uvloop import new_event_loop
    except ImportError:
        new_event_loop = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        print(json.dumps(runner.run(run(job))))


if __name__ == "__main__":
    main()
