"""The load generator: its own process, so that it does not share the server's core.

Reads a JSON job (one line) on stdin and runs it; prints what it measured as JSON
on stdout. Modes (`"mode"`):

- `fanout` (default): opens the room's member sockets, publishes at a fixed rate
  (open loop: a slow server does not slow the sender down) and measures delivery.
  `slow_members` extra sockets read their welcome, then never read again (their
  socket has a small window unless `slow_small_window` is false). `prefill` messages
  of 3,000 characters, sent before the measured window, fill its buffers.
- `hold`: opens `members` sockets, prints one JSON line when they are all open,
  waits for a line on stdin, then reports how many were still open and closes them.
- `persist`: `senders` sockets each keep `inflight` messages with nonces in flight
  (closed loop) and count acknowledgements: their own messages echoed back. Sender
  `i` posts to `rooms[i % len(rooms)]` (default: all to `room`).
- `storm`: room sockets that reconnect with `since` after a restart (bench/storm.py).

Options that describe the server: `urls`, `tokens` (empty: no `Authorization`
header), `path_template` (default `/ws/rooms/{room}`), `welcome` (whether the
server sends a first frame to read; default true), `frame` (`json`: the product's
message frame; `raw`: the bare text), `mark` (what precedes the send timestamp in a
delivered frame), `local_addrs` (source addresses to spread sockets over),
`server_pids` (fanout: whose CPU time to report for the measured window only,
without the connects).
"""

import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bench.storm import run_storm

CONNECT_BATCH = 50
MARK = '"body":"bench|'
DRAIN_SECS = 5.0
# An open-loop sender that cannot write for this long past its duration is abandoned:
# the server has stopped reading, and the step must end anyway.
SEND_GRACE_SECS = 5.0
CLOSE_TIMEOUT_SECS = 2.0
PAD = "x" * 60


@dataclass
class Tally:
    deliveries: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    first_at: float = 0.0
    last_at: float = 0.0
    expected: int = 0
    all_in: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Target:
    """How to reach the room's sockets on the server under test."""

    urls: list[str]
    room: str
    tokens: list[str]
    path_template: str = "/ws/rooms/{room}"
    welcome: bool = True
    local_addrs: list[str] = field(default_factory=list)
    # A 4 KiB receive buffer and 536-byte segments, as on a slow link: on loopback the
    # kernel would otherwise let the server queue up to 4 MiB for a peer that does not
    # read, and a bench step would end long before that fills.
    small_window: bool = False

    @classmethod
    def of(cls, job: dict[str, Any], urls: list[str] | None = None) -> "Target":
        return cls(
            urls=urls or job["urls"],
            room=job.get("room", ""),
            tokens=job.get("tokens") or [],
            path_template=job.get("path_template", "/ws/rooms/{room}"),
            welcome=job.get("welcome", True),
            local_addrs=job.get("local_addrs") or [],
        )

    def with_small_window(self, small_window: bool) -> "Target":
        return dataclasses.replace(self, small_window=small_window)

    async def open(self, i: int) -> ClientConnection:
        url = self.urls[i % len(self.urls)] + self.path_template.format(room=self.room)
        kwargs: dict[str, Any] = {}
        if self.tokens:
            kwargs["additional_headers"] = {
                "Authorization": f"Bearer {self.tokens[i % len(self.tokens)]}"
            }
        if self.local_addrs:
            # Passed on to loop.create_connection: spreads sockets over source
            # addresses, each with its own range of ephemeral ports.
            kwargs["local_addr"] = (self.local_addrs[i % len(self.local_addrs)], 0)
        if self.small_window:
            # Set before connecting, so that the peer sees them from the handshake on.
            parsed = urllib.parse.urlsplit(url)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (parsed.hostname, parsed.port))
            kwargs["sock"] = sock
        ws = await connect(
            url,
            max_size=None,
            open_timeout=60,
            ping_interval=None,
            close_timeout=CLOSE_TIMEOUT_SECS,
            compression=None,
            **kwargs,
        )
        if self.welcome:
            welcome = orjson.loads(await ws.recv())
            # A room's welcome, or the `ready` of /ws/me.
            assert welcome["type"] in ("welcome", "ready"), welcome
        return ws

    async def open_many(self, count: int, first: int = 0) -> list[ClientConnection]:
        sockets: list[ClientConnection] = []
        for start in range(first, first + count, CONNECT_BATCH):
            batch = range(start, min(start + CONNECT_BATCH, first + count))
            sockets += await asyncio.gather(*(self.open(i) for i in batch))
        return sockets


class FrameReader(asyncio.Protocol):
    """Takes over a member socket's transport once its welcome is read, and reads the
    server's frames off it without a WebSocket library.

    The load generator must cost far less per delivery than the servers it measures,
    or in large rooms it measures itself: a library's task wake-up and frame object
    per delivery cost more than the product's own work. Server frames are unmasked,
    so reading one is its length, and the mark in a text frame gives the send time.
    """

    def __init__(self, transport: asyncio.Transport, tally: Tally, mark: bytes) -> None:
        self.transport = transport
        self.tally = tally
        self.mark = mark
        self.buffer = bytearray()
        self.reading = True
        transport.set_protocol(self)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self.buffer
        buffer += data
        size, at = len(buffer), 0
        while size - at >= 2:
            length, head = buffer[at + 1] & 0x7F, 2
            if length == 126:
                length, head = int.from_bytes(buffer[at + 2 : at + 4], "big"), 4
            elif length == 127:
                length, head = int.from_bytes(buffer[at + 2 : at + 10], "big"), 10
            end = at + head + length
            if end > size:
                break
            opcode = buffer[at] & 0x0F
            if opcode == 0x1 and self.reading:
                self._deliver(buffer, at + head, end, now)
            elif opcode == 0x9:
                self._pong(bytes(buffer[at + head : end]))
            at = end
        del buffer[:at]

    def _deliver(self, buffer: bytearray, start: int, end: int, now: float) -> None:
        found = buffer.find(self.mark, start, end)
        if found < 0:
            return
        found += len(self.mark)
        sent_at = float(buffer[found : buffer.index(b"|", found, end)])
        tally = self.tally
        tally.deliveries += 1
        tally.latencies_ms.append((now - sent_at) * 1000)
        tally.first_at = tally.first_at or now
        tally.last_at = now
        if tally.deliveries == tally.expected:
            tally.all_in.set()

    def _pong(self, payload: bytes) -> None:
        # Client frames are masked (RFC 6455, 5.3); a zero mask leaves the payload as is.
        self.transport.write(bytes((0x8A, 0x80 | len(payload))) + bytes(4) + payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reading = False

    def close(self) -> None:
        self.reading = False
        if not self.transport.is_closing():
            # A close frame with no code, masked with a zero mask, then the TCP close.
            self.transport.write(b"\x88\x80" + bytes(4))
            self.transport.close()


async def sender(
    ws: ClientConnection,
    rate: float,
    duration: float,
    index: int,
    raw_frames: bool,
    progress: list[int],
) -> bool:
    """Publish at `rate` for `duration`; `progress[index]` counts what was sent.

    False if the server closed the socket before the end."""
    interval = 1.0 / rate
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < duration:
        body = f"bench|{time.time():.6f}|{index}-{sent}|{PAD}"
        try:
            await ws.send(body if raw_frames else json.dumps({"type": "message", "body": body}))
        except ConnectionClosed:
            return False
        sent += 1
        progress[index] = sent
        next_at = sent * interval
        if next_at > elapsed:
            await asyncio.sleep(next_at - elapsed)
    return True


async def prefill(ws: ClientConnection, count: int, raw_frames: bool) -> None:
    """Send `count` large unmarked messages, then let the room settle."""
    body = "fill|" + "y" * 3000
    frame = body if raw_frames else json.dumps({"type": "message", "body": body})
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        async with asyncio.timeout(SEND_GRACE_SECS):
            for _ in range(count):
                await ws.send(frame)
    await asyncio.sleep(1.0)


async def close_all(sockets: list[ClientConnection]) -> None:
    """Close every socket, aborting those whose peer does not finish the handshake."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True),
            CLOSE_TIMEOUT_SECS + 1,
        )
    for ws in sockets:
        if ws.state is not State.CLOSED:
            ws.transport.abort()


async def drain_slow(ws: ClientConnection) -> dict[str, Any]:
    """Read what a never-reading socket has waiting, to learn whether it was dropped."""
    frames = 0
    ws.transport.resume_reading()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_SECS):
            while True:
                await ws.recv(decode=False)
                frames += 1
    except TimeoutError:
        return {"dropped": False, "frames_waiting": frames}
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        return {"dropped": True, "close_code": code, "frames_waiting": frames}


def process_cpu_secs(pid: int) -> float:
    """User + system CPU time of another process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_time() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_fanout(job: dict[str, Any]) -> dict[str, Any]:
    members = Target.of(job)
    senders_at = Target.of(job, job.get("sender_urls"))
    mark = job.get("mark", MARK).encode()
    raw_frames = job.get("frame", "json") == "raw"
    readers: list[FrameReader] = []
    slow: list[ClientConnection] = []
    senders: list[ClientConnection] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        tally = Tally()
        readers = [
            FrameReader(ws.transport, tally, mark) for ws in await members.open_many(job["members"])
        ]
        slow = await members.with_small_window(job.get("slow_small_window", True)).open_many(
            job.get("slow_members", 0), first=job["members"]
        )
        for ws in slow:
            # Not even the client library reads on: what the server sends stays in the
            # kernel's buffers, then in the server's.
            ws.transport.pause_reading()
        senders = [await senders_at.open(i) for i in range(job["senders"])]
        tasks = [asyncio.create_task(_discard(ws)) for ws in senders]
        if job.get("prefill"):
            await prefill(senders[0], job["prefill"], raw_frames)
        server_pids = job.get("server_pids", [])
        server_before = sum(process_cpu_secs(pid) for pid in server_pids)
        cpu_before = cpu_time()
        started = time.monotonic()
        progress = [0] * len(senders)
        rate = job["rate"] / len(senders)
        sending = asyncio.gather(
            *(
                sender(ws, rate, job["duration"], i, raw_frames, progress)
                for i, ws in enumerate(senders)
            )
        )
        try:
            finished = await asyncio.wait_for(sending, job["duration"] + SEND_GRACE_SECS)
            stalled = False
        except TimeoutError:
            finished, stalled = [], True
        send_secs = time.monotonic() - started
        sent = sum(progress)
        expected = tally.expected = sent * job["members"]
        if tally.deliveries < expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tally.all_in.wait(), DRAIN_SECS)
        cpu_secs = cpu_time() - cpu_before
        server_cpu = sum(process_cpu_secs(pid) for pid in server_pids) - server_before
        elapsed = time.monotonic() - started
        for reader in readers:
            reader.reading = False
        for task in tasks:
            task.cancel()
        slow_outcomes = [await drain_slow(ws) for ws in slow]
    finally:
        for task in tasks:
            task.cancel()
        for reader in readers:
            reader.close()
        await close_all(slow + senders)
    window = max(tally.last_at - tally.first_at, send_secs)
    result = {
        "sent": sent,
        "expected": expected,
        "delivered": tally.deliveries,
        "deliveries_per_sec": tally.deliveries / window if window else 0.0,
        "latencies_ms": sorted(tally.latencies_ms),
        "loadgen_cpu_share": cpu_secs / elapsed,
    }
    if server_pids:
        result["server_cpu_secs"] = server_cpu
    if stalled:
        result["sender_stalled"] = True
    if not all(finished):
        result["sender_closed"] = True
    if slow:
        result["slow_members"] = slow_outcomes
    return result


async def run_hold(job: dict[str, Any]) -> dict[str, Any]:
    target = Target.of(job)
    sockets: list[ClientConnection] = []
    errors: dict[str, int] = {}

    async def try_open(i: int) -> None:
        try:
            sockets.append(await target.open(i))
        except Exception as exc:
            key = f"{type(exc).__name__}: {exc}"[:200]
            errors[key] = errors.get(key, 0) + 1

    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    try:
        for start in range(0, job["members"], CONNECT_BATCH):
            batch = range(start, min(start + CONNECT_BATCH, job["members"]))
            await asyncio.gather(*(try_open(i) for i in batch))
        # Read (and drop) whatever the server sends, so that pings are answered.
        tasks = [asyncio.create_task(_discard(ws)) for ws in sockets]
        ready = {
            "opened": len(sockets),
            "failed": sum(errors.values()),
            "errors": errors,
            "connect_secs": time.monotonic() - started,
        }
        print(json.dumps(ready), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        still_open = sum(ws.state is State.OPEN for ws in sockets)
    finally:
        for task in tasks:
            task.cancel()
        await close_all(sockets)
    return {**ready, "open_at_release": still_open}


async def persist_sender(
    ws: ClientConnection, index: int, inflight: int, duration: float, started: float
) -> dict[str, Any]:
    """Keep `inflight` messages waiting for their acknowledgement until `duration` is up."""
    window = asyncio.Semaphore(inflight)
    pending: dict[bytes, float] = {}
    latencies: list[float] = []
    counts = {"acked": 0, "acked_in_time": 0, "errors": 0}
    prefix = f'"nonce":"p{index}-'.encode()
    deadline = started + duration
    done = asyncio.Event()

    def on_frame(raw: bytes) -> None:
        at = raw.find(prefix)
        if at < 0:
            if b'"type":"error"' in raw:
                counts["errors"] += 1
            return
        at += len(prefix) - len(f"p{index}-")
        sent_at = pending.pop(raw[at : raw.index(b'"', at)], None)
        if sent_at is None:
            return
        now = time.monotonic()
        latencies.append((now - sent_at) * 1000)
        counts["acked"] += 1
        counts["acked_in_time"] += now <= deadline
        window.release()
        if not pending and now >= deadline:
            done.set()

    async def read_acks() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                on_frame(await ws.recv(decode=False))

    reader = asyncio.create_task(read_acks())
    sent = 0
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(window.acquire(), left)
            except TimeoutError:
                break
            nonce = f"p{index}-{sent}"
            pending[nonce.encode()] = time.monotonic()
            body = f"persist|{index}-{sent}|{PAD}"
            await ws.send(json.dumps({"type": "message", "body": body, "nonce": nonce}))
            sent += 1
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), DRAIN_SECS)
    finally:
        reader.cancel()
    return {"sent": sent, **counts, "unacked": len(pending), "latencies_ms": latencies}


async def run_persist(job: dict[str, Any]) -> dict[str, Any]:
    target = Target.of(job)
    senders: list[ClientConnection] = []
    try:
        rooms = job.get("rooms") or [target.room]
        senders = [
            await dataclasses.replace(target, room=rooms[i % len(rooms)]).open(i)
            for i in range(job["senders"])
        ]
        cpu_before = cpu_time()
        started = time.monotonic()
        results = await asyncio.gather(
            *(
                persist_sender(ws, i, job["inflight"], job["duration"], started)
                for i, ws in enumerate(senders)
            )
        )
        elapsed = time.monotonic() - started
        cpu_secs = cpu_time() - cpu_before
    finally:
        await close_all(senders)
    total = {key: sum(r[key] for r in results) for key in ("sent", "acked", "unacked", "errors")}
    acked_in_time = sum(r["acked_in_time"] for r in results)
    return {
        **total,
        "acks_per_sec": acked_in_time / job["duration"],
        "latencies_ms": sorted(lat for r in results for lat in r["latencies_ms"]),
        "loadgen_cpu_share": cpu_secs / elapsed,
    }


async def _discard(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


MODES = {"fanout": run_fanout, "hold": run_hold, "persist": run_persist, "storm": run_storm}


def main() -> None:
    # One line, so that `hold` can read its release line from the same stdin.
    job = json.loads(sys.stdin.readline())
    try:
        from uvloop import new_event_loop
    except ImportError:
        new_event_loop = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        print(json.dumps(runner.run(MODES[job.get("mode", "fanout")](job))), flush=True)


if __name__ == "__main__":
    main()
