"""`python -m bench attacks`: hostile clients, each against a fresh server, bounded.

For each attack: a fresh `chat serve` (SQLite in a temporary data dir, default
settings, started with the usual default soft limit of 1,024 open files), eight
signed-in users in `general` sending messages at the default sustained rate
(40 messages/s in all), first with no attack (the unattacked acknowledgement
latency, over 200 messages), then while one attack runs from its own process
(`bench.attackers`) for `--duration` seconds. Measured: the server's RSS (peak and
after the attack, from /proc), the users' acknowledgement latency, `/healthz` on a
new connection every half second, and for the registration flood a user's sign-in
time. The server is killed if its RSS passes `--kill-rss-mib`.

An attack passes when the server's RSS grows by at most RSS_BOUND_MIB, the
attacked p99 is at most P99_BOUND times the unattacked one (taken as at least
`--p99-floor-ms`: below it, loopback timing on a shared machine is noise), no
acknowledgement is lost, `/healthz` always answers and a sign-in takes at most
P99_BOUND times as long as unattacked.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.attackers import ATTACKS as ATTACKERS
from bench.common import STEP_ERRORS, percentile, print_table
from bench.servers import PASSWORD, free_port, rss_bytes, wait_healthy, wait_listening

RSS_BOUND_MIB = 64.0
P99_BOUND = 2.0
# The legitimate users and the attacker connect from their own loopback addresses,
# as different clients would: per-address limits must tell them apart.
LEGIT_ADDR = "127.0.0.2"
ATTACKER_ADDR = "127.0.0.3"
LEGIT_USERS = 8
# CHAT_RATE_PER_SEC's default: the users send as fast as they may and no faster.
PER_USER_RATE = 5.0
BASELINE_SENDS = 200
SERVER_OPEN_FILES = 1024
HISTORY_MESSAGES = 500
HISTORY_BODY_CHARS = 4000
RSS_SAMPLE_SECS = 0.05
HEALTH_EVERY_SECS = 0.5
HEALTH_TIMEOUT_SECS = 5.0
SIGN_IN_EVERY_SECS = 1.0
ACK_GRACE_SECS = 5.0
SETTLE_SECS = 1.0
# What the attacker process may take beyond its attack (starting, closing sockets).
ATTACKER_SLACK_SECS = 30.0


@dataclass(frozen=True)
class Attack:
    name: str
    what: str
    token: bool = False  # the attacker has an account and signs in first
    history: bool = False  # a room with HISTORY_MESSAGES long messages to replay
    sign_ins: bool = False  # a legitimate sign-in is timed during the attack


ATTACKS = [
    Attack("ping-flood", "4 sockets without a token on general flood pings, read nothing"),
    Attack("endless-headers", "one request's header lines never end (up to 100 MiB)"),
    Attack("slowloris", "1,000 half-sent requests trickling headers + 100 idle connections"),
    Attack("register-flood", "8 clients at one address register accounts", sign_ins=True),
    Attack("typing-flood", "4 signed-in sockets send typing frames flat out", token=True),
    Attack("long-usernames", "8 clients: failed sign-ins with 1 MB usernames"),
    Attack(
        "since-loop", "4 loops of one account reconnect with ?since=0", token=True, history=True
    ),
    Attack("room-flood", "8 clients of one account create rooms", token=True),
]
assert [a.name for a in ATTACKS] == list(ATTACKERS)
BY_NAME = {attack.name: attack for attack in ATTACKS}


def attack_list(text: str) -> list[str]:
    names = text.split(",")
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown attack {','.join(unknown)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--attacks",
        type=attack_list,
        default=[a.name for a in ATTACKS],
        help=f"attacks: which to run, of {','.join(BY_NAME)}",
    )
    parser.add_argument(
        "--at",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="attacks: serve from another checkout of the project (with its .venv if it "
        "has one), to compare before and after",
    )
    parser.add_argument(
        "--kill-rss-mib",
        type=float,
        default=1536.0,
        help="attacks: kill the server when its RSS passes this",
    )
    parser.add_argument(
        "--p99-floor-ms",
        type=float,
        default=10.0,
        help="attacks: the least unattacked p99 the attacked one is compared with",
    )


# -- the server under attack -------------------------------------------------------


def usual_open_files_limit() -> None:
    """In the server's process before exec: the soft limit most shells and units give."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(SERVER_OPEN_FILES, hard), hard))


@dataclass
class AttackedServer:
    """One `chat serve` process, from this checkout or another one."""

    data_dir: Path
    checkout: Path | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        python, cwd = sys.executable, None
        env = {
            **os.environ,
            "CHAT_DATA_DIR": str(self.data_dir),
            "CHAT_SECRET_KEY": secrets.token_urlsafe(48),
            "PYTHONUNBUFFERED": "1",
        }
        if self.checkout is not None:
            cwd = self.checkout.resolve()
            env["PYTHONPATH"] = str(cwd)
            own = cwd / ".venv" / "bin" / "python"
            python = str(own) if own.exists() else python
        self.port = free_port()
        self.proc = subprocess.Popen(
            [python, "-m", "chat", "serve", "--port", str(self.port)],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=usual_open_files_limit,
        )
        wait_listening(self.port, self.proc, 60)
        wait_healthy(self.url)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the legitimate users ----------------------------------------------------------


def http_client(url: str, source: str, timeout: float = 30.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=timeout,
        transport=httpx.AsyncHTTPTransport(local_address=source),
    )


async def sign_up(url: str, source: str, count: int) -> list[tuple[str, int, str]]:
    """`count` new accounts made from `source`: (username, user id, token)."""
    accounts = []
    async with http_client(url, source) as http:
        for _ in range(count):
            name = f"b{secrets.token_hex(5)}"
            r = await http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
            r.raise_for_status()
            t = await http.post("/api/auth/token", data={"username": name, "password": PASSWORD})
            t.raise_for_status()
            accounts.append((name, r.json()["id"], t.json()["access_token"]))
    return accounts


@dataclass
class LegitUsers:
    """Signed-in users in `general`, each sending at PER_USER_RATE; acks timed by nonce."""

    ws_url: str
    tokens: list[str]
    sockets: list[ClientConnection] = field(default_factory=list)
    sent_at: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    closed: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def open(self) -> None:
        for i, token in enumerate(self.tokens):
            ws = await connect(
                f"{self.ws_url}/ws/rooms/general",
                additional_headers={"Authorization": f"Bearer {token}"},
                local_addr=(LEGIT_ADDR, 0),
                max_size=None,
                ping_interval=None,
                compression=None,
                open_timeout=30,
            )
            welcome = orjson.loads(await ws.recv())
            assert welcome["type"] == "welcome", welcome
            self.sockets.append(ws)
            self.tasks.append(asyncio.create_task(self._read(ws, f"l{i}-")))

    async def _read(self, ws: ClientConnection, mine: str) -> None:
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                kind = frame.get("type")
                if kind == "message":
                    nonce = frame.get("nonce") or ""
                    at = self.sent_at.get(nonce) if nonce.startswith(mine) else None
                    if at is not None and nonce not in self.latency_ms:
                        self.latency_ms[nonce] = (time.monotonic() - at) * 1000
                elif kind == "error":
                    code = str(frame.get("code"))
                    self.errors[code] = self.errors.get(code, 0) + 1
        except ConnectionClosed as exc:
            self.closed.append(str(exc.rcvd.code) if exc.rcvd else "no close frame")

    async def send(self, count: int) -> None:
        """Send `count` messages, evenly spaced over all users (`count` 0: until cancelled)."""
        interval = 1.0 / (PER_USER_RATE * len(self.sockets))
        started = time.monotonic()
        n = 0
        while count == 0 or n < count:
            i = n % len(self.sockets)
            nonce = f"l{i}-{len(self.sent_at)}"
            self.sent_at[nonce] = time.monotonic()
            body = f"hello {n}"
            with contextlib.suppress(ConnectionClosed):
                await self.sockets[i].send(
                    json.dumps({"type": "message", "body": body, "nonce": nonce})
                )
            n += 1
            delay = started + n * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def window(self, start: float, end: float) -> tuple[list[float], int]:
        """Latencies of the messages sent within [start, end), sorted; how many are lost."""
        latencies, lost = [], 0
        for nonce, at in self.sent_at.items():
            if start <= at < end:
                if nonce in self.latency_ms:
                    latencies.append(self.latency_ms[nonce])
                else:
                    lost += 1
        return sorted(latencies), lost

    async def wait_acks(self, secs: float) -> None:
        deadline = time.monotonic() + secs
        while len(self.latency_ms) < len(self.sent_at) and time.monotonic() < deadline:
            if len(self.closed) == len(self.sockets):
                return
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        for ws in self.sockets:
            ws.transport.abort()


# -- what is watched during an attack ----------------------------------------------


@dataclass
class Watch:
    """Samples of the server's RSS and /healthz, and the server killed past a cap."""

    url: str
    pid: int
    kill_rss: int
    rss: list[tuple[float, int]] = field(default_factory=list)
    health: list[tuple[float, float | None]] = field(default_factory=list)
    killed_at_mib: float | None = None

    async def sample_rss(self) -> None:
        while True:
            try:
                rss = rss_bytes(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.rss.append((time.monotonic(), rss))
            if rss > self.kill_rss and self.killed_at_mib is None:
                self.killed_at_mib = rss / 2**20
                os.kill(self.pid, signal.SIGKILL)
                return
            await asyncio.sleep(RSS_SAMPLE_SECS)

    async def probe_health(self) -> None:
        while True:
            started = time.monotonic()
            ms: float | None = None
            # A new connection each time, as a load balancer's check would open.
            with contextlib.suppress(httpx.HTTPError):
                async with http_client(self.url, LEGIT_ADDR, HEALTH_TIMEOUT_SECS) as http:
                    if (await http.get("/healthz")).status_code == 200:
                        ms = (time.monotonic() - started) * 1000
            self.health.append((started, ms))
            await asyncio.sleep(max(0.0, started + HEALTH_EVERY_SECS - time.monotonic()))

    def peak_rss(self, start: float) -> int:
        return max((rss for t, rss in self.rss if t >= start), default=0)


async def time_sign_ins(url: str, name: str, samples: list[tuple[float, float | None]]) -> None:
    """A user signing in once a second, each time on a new connection."""
    while True:
        started = time.monotonic()
        ms: float | None = None
        with contextlib.suppress(httpx.HTTPError):
            async with http_client(url, LEGIT_ADDR) as http:
                r = await http.post(
                    "/api/auth/token", data={"username": name, "password": PASSWORD}
                )
                if r.status_code == 200:
                    ms = (time.monotonic() - started) * 1000
        samples.append((started, ms))
        await asyncio.sleep(max(0.0, started + SIGN_IN_EVERY_SECS - time.monotonic()))


def fill_history(db: Path, room: str, user_id: int) -> None:
    """HISTORY_MESSAGES long messages in `room`, written straight into the database: the
    rate limit would take minutes to let them through."""
    body = "h" * HISTORY_BODY_CHARS
    ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        (room_id,) = conn.execute("SELECT id FROM rooms WHERE name = ?", (room,)).fetchone()
        conn.executemany(
            "INSERT INTO messages (room_id, seq, user_id, body, nonce, ts)"
            " VALUES (?, ?, ?, ?, NULL, ?)",
            [(room_id, seq, user_id, body, ts) for seq in range(1, HISTORY_MESSAGES + 1)],
        )
        conn.execute("UPDATE rooms SET last_seq = ? WHERE id = ?", (HISTORY_MESSAGES, room_id))
        conn.commit()


async def run_attacker(job: dict[str, Any], on_start: asyncio.Event) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.attackers",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(job).encode() + b"\n")
        await proc.stdin.drain()
        async with asyncio.timeout(job["secs"] + ATTACKER_SLACK_SECS):
            started = await proc.stdout.readline()
            if not started:
                raise RuntimeError("the attacker did not start")
            on_start.set()
            line = await proc.stdout.readline()
        if not line:
            raise RuntimeError("the attacker gave no answer")
        result: dict[str, Any] = json.loads(line)
        return result
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()


# -- one attack --------------------------------------------------------------------


def stats(latencies: list[float], lost: int) -> dict[str, Any]:
    # A lost acknowledgement counts as slower than any that came.
    values = latencies + [math.inf] * lost
    return {
        "sends": len(values),
        "lost": lost,
        "p50_ms": percentile(values, 0.5),
        "p99_ms": percentile(values, 0.99),
    }


async def attack_server(
    server: AttackedServer, attack: Attack, args: argparse.Namespace
) -> dict[str, Any]:
    url = server.url
    ws_url = url.replace("http://", "ws://")
    legit_accounts = await sign_up(url, LEGIT_ADDR, LEGIT_USERS)
    job: dict[str, Any] = {
        "attack": attack.name,
        "url": url,
        "secs": args.duration,
        "source": ATTACKER_ADDR,
    }
    if attack.token or attack.history:
        ((_name, user_id, token),) = await sign_up(url, ATTACKER_ADDR, 1)
        job["token"] = token
        if attack.history:
            room = f"history-{secrets.token_hex(3)}"
            async with http_client(url, ATTACKER_ADDR) as http:
                r = await http.post(
                    "/api/rooms", json={"name": room}, headers={"Authorization": f"Bearer {token}"}
                )
                r.raise_for_status()
            fill_history(server.data_dir / "chat.db", room, user_id)
            job["room"] = room

    users = LegitUsers(ws_url, [token for _n, _id, token in legit_accounts])
    watch = Watch(url, server.pid, int(args.kill_rss_mib * 2**20))
    sign_ins: list[tuple[float, float | None]] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await users.open()
        # Warm-up, not measured: one message each.
        await users.send(len(users.sockets))
        await users.wait_acks(ACK_GRACE_SECS)
        tasks = [
            asyncio.create_task(watch.sample_rss()),
            asyncio.create_task(watch.probe_health()),
            asyncio.create_task(users.send(0)),
        ]
        if attack.sign_ins:
            tasks.append(asyncio.create_task(time_sign_ins(url, legit_accounts[0][0], sign_ins)))
        base_start = time.monotonic()
        await asyncio.sleep(BASELINE_SENDS / (PER_USER_RATE * LEGIT_USERS))
        base_end = time.monotonic()
        rss_before = rss_bytes(server.pid)

        started = asyncio.Event()
        attacking = asyncio.create_task(run_attacker(job, started))
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait([attacking, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        attack_start = time.monotonic()
        try:
            attacker = await attacking
        except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
            attacker = {"error": str(exc) or type(exc).__name__}
        attack_end = time.monotonic()
        for task in tasks[2:]:
            task.cancel()
        await users.wait_acks(ACK_GRACE_SECS)
        await asyncio.sleep(SETTLE_SECS)
        peak = watch.peak_rss(attack_start)
        killed = watch.killed_at_mib
        try:
            rss_after: int | None = rss_bytes(server.pid) if killed is None else None
        except (FileNotFoundError, ProcessLookupError):
            rss_after = None
    finally:
        for task in tasks:
            task.cancel()
        await users.close()

    base = stats(*users.window(base_start, base_end))
    hit = stats(*users.window(attack_start, attack_end))
    health = [ms for t, ms in watch.health if attack_start <= t < attack_end]
    row: dict[str, Any] = {
        "attack": attack.name,
        "what": attack.what,
        "secs": args.duration,
        "rss_before_mib": rss_before / 2**20,
        "rss_peak_growth_mib": (peak - rss_before) / 2**20,
        "rss_after_growth_mib": (rss_after - rss_before) / 2**20 if rss_after else None,
        "killed_at_mib": killed,
        "unattacked": base,
        "attacked": hit,
        "healthz_probes": len(health),
        "healthz_failed": sum(ms is None for ms in health),
        "healthz_worst_ms": max((ms for ms in health if ms is not None), default=None),
        "legit_errors": users.errors,
        "legit_closed": users.closed,
        "attacker": attacker,
    }
    if attack.sign_ins:
        row["sign_in_unattacked_ms"] = worst(sign_ins, base_start, base_end)
        row["sign_in_attacked_ms"] = worst(sign_ins, attack_start, attack_end)
    return row


def worst(samples: list[tuple[float, float | None]], start: float, end: float) -> float | None:
    """The slowest of the samples started within [start, end); inf if one failed."""
    within = [ms for t, ms in samples if start <= t < end]
    if not within:
        return None
    return math.inf if None in within else max(ms for ms in within if ms is not None)


def judge(row: dict[str, Any], p99_floor_ms: float) -> dict[str, Any]:
    """The row with its p99 ratio, its verdict and why."""
    why: list[str] = []
    if "error" in row:
        why.append(f"error: {row['error']}")
    else:
        if row["killed_at_mib"] is not None:
            why.append(f"server killed at {row['killed_at_mib']:,.0f} MiB")
        if row["rss_peak_growth_mib"] > RSS_BOUND_MIB:
            why.append(f"RSS +{row['rss_peak_growth_mib']:,.0f} MiB")
        ratio = row["attacked"]["p99_ms"] / max(row["unattacked"]["p99_ms"], p99_floor_ms)
        row["p99_ratio"] = ratio
        if "error" in (row.get("attacker") or {}):
            why.append("the attacker failed")
        if not (row["attacked"]["sends"] and row["unattacked"]["sends"]):
            why.append("no messages measured")
        elif not ratio <= P99_BOUND:
            why.append("p99 x" + ("∞" if math.isinf(ratio) else f"{ratio:.1f}"))
        if row["attacked"]["lost"]:
            why.append(f"{row['attacked']['lost']} acks lost")
        if row["healthz_failed"]:
            why.append(f"/healthz failed {row['healthz_failed']}x")
        before, after = row.get("sign_in_unattacked_ms"), row.get("sign_in_attacked_ms")
        if before and after and after > P99_BOUND * before:
            shown = "never" if math.isinf(after) else f"{after:,.0f} ms"
            why.append(f"sign-in {before:,.0f} ms → {shown}")
    row["verdict"] = "FAIL" if why else "PASS"
    row["why"] = why
    return row


def attacker_summary(row: dict[str, Any]) -> str:
    """What the attacker did and what the server answered, in a few words."""
    a = row.get("attacker")
    if not a:
        return ""
    if "error" in a:
        return f"attacker: {a['error']}"
    answers = ", ".join(f"{k}x{v:,}" for k, v in sorted(a.get("answers", {}).items()))
    name = row["attack"]
    if name in ("ping-flood", "typing-flood"):
        ends = ", ".join(f"{k}x{v:,}" for k, v in sorted(a["ends"].items())) or "none"
        sent = f"{a['frames']:,} frames" if "frames" in a else f"{a['sent_bytes'] / 2**20:,.0f} MiB"
        return f"{sent} on {a['opened']} sockets; ends: {ends}"
    if name == "endless-headers":
        return f"{a['sent_mib']:,.0f} MiB of headers; {answers}"
    if name == "slowloris":
        return f"{a['still_open']:,} of {a['opened']:,} still open ({a['failed']} refused)"
    if name == "register-flood":
        return f"{a['created']:,} accounts; {answers}"
    if name == "long-usernames":
        return f"{a['attempts']:,} tries; {answers}"
    if name == "since-loop":
        return f"{a['served_mib']:,.0f} MiB served; {answers}"
    if name == "room-flood":
        size = a.get("room_list_bytes")
        return f"{a['created']:,} rooms, list {size / 1000 if size else 0:,.0f} kB; {answers}"
    return json.dumps(a)


def attacks_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in args.attacks:
        attack = BY_NAME[name]
        print(f"{name}: {attack.what}, {args.duration:g} s ...", flush=True)
        row: dict[str, Any] = {"attack": name, "what": attack.what}
        with tempfile.TemporaryDirectory() as tmp:
            server = AttackedServer(Path(tmp), args.at)
            try:
                server.start()
                row = asyncio.run(attack_server(server, attack, args))
            except STEP_ERRORS as exc:
                row["error"] = str(exc) or type(exc).__name__
            finally:
                server.stop()
        row["server"] = str(args.at) if args.at else "this checkout"
        rows.append(judge(row, args.p99_floor_ms))
    print_report(rows)
    return [finite(row) for row in rows]


def print_report(rows: list[dict[str, Any]]) -> None:
    print(
        f"\nattacks: server RSS growth (bound {RSS_BOUND_MIB:.0f} MiB) and the others' "
        f"acknowledgement p99 (bound {P99_BOUND:g}x unattacked)"
    )
    table = []
    for row in rows:
        line = {
            "attack": row["attack"],
            "verdict": row["verdict"],
            "notes": "; ".join(t for t in [*row["why"], attacker_summary(row)] if t),
        }
        if "error" not in row:
            hit = row["attacked"]
            line.update(
                rss=row["rss_before_mib"],
                peak=row["rss_peak_growth_mib"],
                after=row["rss_after_growth_mib"] if row["killed_at_mib"] is None else "killed",
                p99=row["unattacked"]["p99_ms"],
                hit="lost" if math.isinf(hit["p99_ms"]) else hit["p99_ms"],
                ratio="∞" if math.isinf(row["p99_ratio"]) else row["p99_ratio"],
                health=(
                    f"{row['healthz_failed']}/{row['healthz_probes']} failed"
                    if row["healthz_failed"]
                    else row["healthz_worst_ms"]
                ),
            )
        table.append(line)
    print_table(
        [
            ("attack", "attack", ""),
            ("RSS MiB", "rss", ".0f"),
            ("peak +MiB", "peak", ",.1f"),
            ("after +MiB", "after", ",.1f"),
            ("p99 ms", "p99", ".1f"),
            ("attacked p99", "hit", ",.1f"),
            ("x", "ratio", ".1f"),
            ("healthz max ms", "health", ",.0f"),
            ("verdict", "verdict", ""),
            ("", "notes", "<"),
        ],
        table,
    )


def finite(value: Any) -> Any:
    """The value with infinities as None, so that the rows are strict JSON."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
