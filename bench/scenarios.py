"""The scenarios beyond `cluster`: the product against baselines, and its capacity.

See `python -m bench --help` for what each measures.
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import select
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from bench.common import (
    RESULTS,
    STEP_ERRORS,
    SUSTAINED_P99_MS,
    Server,
    chat_cluster,
    is_sustained,
    measure,
    percentile,
    print_row,
    print_table,
    run_loadgen,
)
from bench.servers import PASSWORD, BaselineServer, ChatCluster, cpu_secs, rss_bytes


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def server_list(text: str) -> list[str]:
    names = text.split(",")
    unknown = [name for name in names if name not in KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown server {','.join(unknown)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fanout-members",
        type=int_list,
        default=[10, 100, 1000],
        help="fanout: room sizes, comma-separated",
    )
    parser.add_argument(
        "--fanout-targets",
        type=int_list,
        default=[10_000, 20_000, 40_000, 80_000, 160_000, 320_000],
        help="fanout: offered deliveries/s per step (msg/s = target / members)",
    )
    parser.add_argument(
        "--servers",
        type=server_list,
        default=list(KINDS),
        help=f"fanout and slow: servers to run, of {','.join(KINDS)}",
    )
    parser.add_argument("--slow-members", type=int, default=100, help="slow: room size")
    parser.add_argument("--slow-rate", type=int, default=200, help="slow: messages/s")
    parser.add_argument(
        "--slow-prefill",
        type=int,
        default=100,
        help="slow: 3,000-character messages sent first, to fill the non-reader's buffers",
    )
    parser.add_argument(
        "--idle-counts",
        type=int_list,
        default=[1000, 5000, 10_000],
        help="idle: connections, comma-separated",
    )
    parser.add_argument(
        "--idle-kind",
        choices=["room", "me", "both"],
        default="room",
        help="idle: sockets held, each in a room (/ws/rooms/NAME) or a tab's /ws/me",
    )
    parser.add_argument("--persist-senders", type=int, default=20, help="persist: sockets")
    parser.add_argument(
        "--persist-inflight", type=int, default=8, help="persist: messages in flight per socket"
    )
    parser.add_argument(
        "--persist-rooms",
        type=int,
        default=20,
        help="persist: rooms the senders post to (20: one each, so that the only delivery "
        "is the acknowledgement; 1: all in one room, each message delivered to every sender)",
    )
    parser.add_argument("--logins", type=int, default=20, help="login: concurrent logins")
    parser.add_argument(
        "--unread-messages",
        type=int,
        default=1_000_000,
        help="unread: messages stored (by SQL) in the room the reader has not read",
    )
    parser.add_argument(
        "--unread-requests", type=int, default=50, help="unread: GET /api/rooms timed"
    )


# -- servers under test ------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    label: str
    module: str | None  # None: the product


KINDS = {
    "product": Kind("product (1 process, SQLite, memory://)", None),
    "seed": Kind("seed baseline (naive ConnectionManager)", "bench.baseline_seed"),
    "bare": Kind("bare websockets baseline", "bench.baseline_bare"),
}


@dataclass
class Endpoint:
    """A running server, and how the load generator reaches a fresh room on it."""

    kind: str
    server: Server
    new_room: Callable[[], dict[str, Any]]


@contextlib.contextmanager
def serving(kind: str) -> Iterator[Endpoint]:
    if KINDS[kind].module is None:
        with chat_cluster() as cluster:
            tokens = cluster.accounts(10)

            def product_room() -> dict[str, Any]:
                return {
                    "urls": cluster.ws_urls,
                    "tokens": tokens,
                    "room": cluster.create_room(tokens[0], tokens[1:]),
                }

            yield Endpoint(kind, cluster, product_room)
        return
    module = KINDS[kind].module
    assert module is not None
    server = BaselineServer(module)
    try:
        server.start()

        def baseline_room() -> dict[str, Any]:
            return {
                "urls": server.ws_urls,
                "room": f"bench-{secrets.token_hex(4)}",
                "path_template": "/ws/{room}",
                "welcome": False,
                "frame": "raw",
                "mark": "bench|",
            }

        yield Endpoint(kind, server, baseline_room)
    finally:
        server.stop()


def fanout_step(
    endpoint: Endpoint, members: int, rate: int, duration: float, **extra: Any
) -> dict[str, Any]:
    """One open-loop step in a fresh room; a failed step becomes a row with `error`."""
    row: dict[str, Any] = {
        "config": KINDS[endpoint.kind].label,
        "server": endpoint.kind,
        "members": members,
        "rate": rate,
        "offered_deliveries_per_sec": rate * members,
    }
    job = {
        **endpoint.new_room(),
        "members": members,
        "senders": 2,
        "rate": rate,
        "duration": duration,
        "server_pids": endpoint.server.pids,
        **extra,
    }
    try:
        row.update(measure(endpoint.server, job))
    except STEP_ERRORS as exc:
        row["error"] = str(exc) or type(exc).__name__
    return row


# -- fanout ------------------------------------------------------------------------


def fanout_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for members in args.fanout_members:
        for kind in args.servers:
            try:
                with serving(kind) as endpoint:
                    kind_rows = []
                    for target in args.fanout_targets:
                        rate = max(1, round(target / members))
                        row = fanout_step(endpoint, members, rate, args.duration)
                        kind_rows.append(row)
                        print_row(row)
                    best = max(
                        (r for r in kind_rows if is_sustained(r)),
                        key=lambda r: r["deliveries_per_sec"],
                        default=None,
                    )
                    half = best["rate"] // 2 if best else 0
                    if kind == "product" and half and all(r["rate"] != half for r in kind_rows):
                        row = fanout_step(endpoint, members, half, args.duration)
                        row["half_of_sustained"] = True
                        kind_rows.append(row)
                        print_row(row)
                    rows += kind_rows
            except STEP_ERRORS as exc:
                # The server did not start: every step of it fails.
                print(f"{KINDS[kind].label}: {exc}", flush=True)
                rows.append(
                    {
                        "config": KINDS[kind].label,
                        "server": kind,
                        "members": members,
                        "rate": 0,
                        "error": str(exc),
                    }
                )
    fanout_summary(rows, args.servers)
    plot_fanout(rows, RESULTS / "fanout.png")
    return rows


def sustained(rows: list[dict[str, Any]], kind: str, members: int) -> dict[str, Any] | None:
    return max(
        (r for r in rows if r["server"] == kind and r["members"] == members and is_sustained(r)),
        key=lambda r: r["deliveries_per_sec"],
        default=None,
    )


def fanout_summary(rows: list[dict[str, Any]], kinds: list[str]) -> None:
    print(
        f"\nfanout: sustained deliveries/s (no loss, p99 <= {SUSTAINED_P99_MS:.0f} ms), "
        "by room size"
    )
    table = []
    for members in sorted({r["members"] for r in rows}):
        line: dict[str, Any] = {"members": members}
        for kind in kinds:
            best = sustained(rows, kind, members)
            line[kind] = best["deliveries_per_sec"] if best else None
        product = line.get("product")
        for base in ("bare", "seed"):
            if product and line.get(base):
                line[f"product/{base}"] = product / line[base]
        best = sustained(rows, "product", members)
        if best:
            # The step at half the product's sustained rate, or the nearest below it.
            below = [
                r
                for r in rows
                if r["server"] == "product"
                and r["members"] == members
                and "error" not in r
                and r["rate"] <= best["rate"] / 2
            ]
            if below:
                near = max(below, key=lambda r: r["rate"])
                line["half_rate"] = near["rate"] * members
                line["half_p99"] = near["p99_ms"]
        table.append(line)
    columns = [("members", "members", "")]
    columns += [(kind, kind, ",.0f") for kind in kinds]
    if "product" in kinds:
        columns += [
            (f"product÷{base}", f"product/{base}", ".2f")
            for base in ("bare", "seed")
            if base in kinds
        ]
        columns += [
            ("product dlv/s at half max", "half_rate", ",.0f"),
            ("its p99 ms", "half_p99", ".1f"),
        ]
    print_table(columns, table)


def plot_fanout(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("(matplotlib is not installed: no plot; see requirements-bench.lock)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["members"] for r in rows})
    fig, axes = plt.subplots(2, len(sizes), figsize=(5 * len(sizes), 8), squeeze=False)
    styles = {"product": "o-", "seed": "s--", "bare": "^:"}
    for col, members in enumerate(sizes):
        top, bottom = axes[0][col], axes[1][col]
        offered_all = [
            r["offered_deliveries_per_sec"]
            for r in rows
            if r["members"] == members and "offered_deliveries_per_sec" in r
        ]
        for kind in KINDS:
            points = sorted(
                (
                    r["offered_deliveries_per_sec"],
                    r["deliveries_per_sec"],
                    r["p99_ms"],
                    r["loadgen_cpu_share"] > 0.9,
                )
                for r in rows
                if r["server"] == kind and r["members"] == members and "error" not in r
            )
            if not points:
                continue
            offered, achieved, p99, saturated = zip(*points, strict=True)
            top.plot(offered, achieved, styles[kind], label=kind)
            bottom.plot(offered, p99, styles[kind], label=kind)
            for ax, values in ((top, achieved), (bottom, p99)):
                marked = [(x, y) for x, y, s in zip(offered, values, saturated, strict=True) if s]
                if marked:
                    ax.plot(*zip(*marked, strict=True), "kx", markersize=9)
        top.set_title(f"{members}-member room (x: load generator saturated)")
        if offered_all:
            span = [min(offered_all), max(offered_all)]
            top.plot(span, span, color="grey", linewidth=0.5, label="offered")
        top.set_yscale("log")
        top.set_xlabel("offered deliveries/s")
        top.set_ylabel("achieved deliveries/s")
        bottom.axhline(SUSTAINED_P99_MS, color="grey", linewidth=0.5)
        bottom.set_yscale("log")
        bottom.set_xlabel("offered deliveries/s")
        bottom.set_ylabel("p99 latency, ms")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")


# -- slow --------------------------------------------------------------------------


def slow_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for kind in [k for k in args.servers if k in ("product", "seed")]:
        for slow in (0, 1):
            try:
                # A fresh server per run: a stalled run must not slow down the next.
                with serving(kind) as endpoint:
                    row = fanout_step(
                        endpoint,
                        args.slow_members,
                        args.slow_rate,
                        args.duration,
                        slow_members=slow,
                        prefill=args.slow_prefill,
                    )
            except STEP_ERRORS as exc:
                row = {"members": args.slow_members, "rate": args.slow_rate, "error": str(exc)}
            row["config"] = KINDS[kind].label.split(" (")[0] + (
                ", + 1 non-reading member" if slow else ", all members read"
            )
            row["server"] = kind
            row["non_readers"] = slow
            rows.append(row)
            print_row(row)
    print(
        f"\nslow: the {args.slow_members} reading members at {args.slow_rate} msg/s, "
        "without / with one member that never reads"
    )
    table = []
    for row in rows:
        lost_share = row["loss"] / row["expected"] if row.get("expected") else 0.0
        line = {
            "config": row["config"],
            # Over 1 % lost: the p99 of what did arrive says nothing about the rest.
            "p99": "lost" if lost_share > 0.01 else row.get("p99_ms"),
            "delivered": row.get("delivered"),
            "expected": row.get("expected"),
            "loss": row.get("loss"),
            "sent": row.get("sent"),
            "notes": ", ".join(
                text
                for text in (
                    row.get("error"),
                    "sender blocked" if row.get("sender_stalled") else None,
                    "sender closed" if row.get("sender_closed") else None,
                    *(
                        (
                            f"non-reader dropped (close {s.get('close_code')})"
                            if s["dropped"]
                            else f"non-reader still open, {s['frames_waiting']} frames waiting"
                        )
                        for s in row.get("slow_members", [])
                    ),
                )
                if text
            )
            or "-",
        }
        table.append(line)
    print_table(
        [
            ("config", "config", ""),
            ("others' p99 ms", "p99", ".1f"),
            ("sent", "sent", ""),
            ("delivered", "delivered", ","),
            ("of expected", "expected", ","),
            ("", "notes", "<"),
        ],
        table,
    )
    return rows


# -- idle --------------------------------------------------------------------------

SOURCE_ADDRS = [f"127.0.0.{i}" for i in range(2, 10)]
HOLD_TIMEOUT_SECS = 600.0


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if not line:
        raise RuntimeError("load generator gave no answer")
    return json.loads(line)


async def admin_stats(cluster: ChatCluster, admin_token: str) -> dict[str, Any]:
    """One stats frame of the product's admin view."""
    async with connect(
        f"{cluster.ws_urls[0]}/ws/admin",
        additional_headers={"Authorization": f"Bearer {admin_token}"},
        compression=None,
        # A server holding 20,000 sockets may take a while to answer one more.
        open_timeout=60,
    ) as ws:
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("type") == "stats":
                return frame


IDLE_PATHS = {"room": "/ws/rooms/{room}", "me": "/ws/me"}
# Sockets per load generator process: each process has its own open files limit.
HOLD_PER_PROCESS = 10_000


def hold_processes(job: dict[str, Any]) -> list[subprocess.Popen[bytes]]:
    """Load generators holding `job["members"]` sockets between them, each told its share."""
    procs = []
    total = job["members"]
    for start in range(0, total, HOLD_PER_PROCESS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        assert proc.stdin is not None
        share = {**job, "members": min(HOLD_PER_PROCESS, total - start)}
        proc.stdin.write(json.dumps(share).encode() + b"\n")
        proc.stdin.flush()
    return procs


def idle_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    kinds = ["room", "me"] if args.idle_kind == "both" else [args.idle_kind]
    for kind, count in itertools.product(kinds, args.idle_counts):
        row: dict[str, Any] = {
            "config": "product (1 process, SQLite)",
            "kind": kind,
            "connections": count,
        }
        try:
            with chat_cluster() as cluster:
                tokens = cluster.accounts(10)  # The first one is the admin.
                room = cluster.create_room(tokens[0], tokens[1:])
                pid = cluster.pids[0]
                time.sleep(1)
                before = rss_bytes(pid)
                job = {
                    "mode": "hold",
                    "urls": cluster.ws_urls,
                    "tokens": tokens,
                    "room": room,
                    "path_template": IDLE_PATHS[kind],
                    "members": count,
                    "local_addrs": SOURCE_ADDRS,
                }
                procs = hold_processes(job)
                try:
                    readies = [read_line(proc, HOLD_TIMEOUT_SECS) for proc in procs]
                    time.sleep(2)  # Let the server finish what the connects started.
                    after = rss_bytes(pid)
                    stats = asyncio.run(admin_stats(cluster, tokens[0]))
                    for proc in procs:
                        assert proc.stdin is not None
                        proc.stdin.write(b"\n")
                        proc.stdin.flush()
                    released = [read_line(proc, 60) for proc in procs]
                finally:
                    for proc in procs:
                        if proc.poll() is None:
                            proc.kill()
                        proc.wait()
            opened = sum(ready["opened"] for ready in readies)
            errors: dict[str, int] = {}
            for ready in readies:
                for error, times in ready["errors"].items():
                    errors[error] = errors.get(error, 0) + times
            open_at_release = sum(r["open_at_release"] for r in released)
            row.update(
                opened=opened,
                failed=sum(ready["failed"] for ready in readies),
                errors=errors,
                connect_secs=max(ready["connect_secs"] for ready in readies),
                server_connections=stats.get("connections"),
                open_at_release=open_at_release,
                rss_before_mib=before / 2**20,
                rss_after_mib=after / 2**20,
                kib_per_connection=(after - before) / max(opened, 1) / 1024,
                held=open_at_release == count,
            )
        except STEP_ERRORS as exc:
            row["error"] = str(exc)
        rows.append(row)
        if "error" in row:
            print(f"{kind} {count} connections: ERROR {row['error']}", flush=True)
        elif row["errors"]:
            print(f"{kind} {count} connections: {row['errors']}", flush=True)
    print("\nidle: server RSS per authenticated idle connection")
    print_table(
        [
            ("config", "config", ""),
            ("socket", "kind", ""),
            ("connections", "connections", ","),
            ("opened", "opened", ","),
            ("server count", "server_connections", ","),
            ("held to the end", "held", ""),
            ("RSS before MiB", "rss_before_mib", ".1f"),
            ("RSS after MiB", "rss_after_mib", ".1f"),
            ("KiB / connection", "kib_per_connection", ".1f"),
            ("connect s", "connect_secs", ".1f"),
        ],
        rows,
    )
    return rows


# -- persist -----------------------------------------------------------------------


def stored_messages(cluster: ChatCluster) -> int:
    url = cluster.env.get("CHAT_DATABASE_URL")
    if url is None:
        with contextlib.closing(sqlite3.connect(cluster.data_dir / "chat.db")) as conn:
            return conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval("SELECT count(*) FROM messages")
        finally:
            await conn.close()

    return asyncio.run(count())


def persist_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    configs = [("product, SQLite (WAL, synchronous=FULL)", False)]
    if os.environ.get("CHAT_BENCH_POSTGRES") == "1":
        configs.append(("product, PostgreSQL", True))
    for label, postgres in configs:
        row: dict[str, Any] = {
            "config": label,
            "senders": args.persist_senders,
            "inflight": args.persist_inflight,
            "rooms": args.persist_rooms,
        }
        try:
            with chat_cluster(postgres=postgres) as cluster:
                tokens = cluster.accounts(10)
                job = {
                    "mode": "persist",
                    "urls": cluster.ws_urls,
                    "tokens": tokens,
                    "rooms": [cluster.create_room(tokens[0]) for _ in range(args.persist_rooms)],
                    "senders": args.persist_senders,
                    "inflight": args.persist_inflight,
                    "duration": args.duration,
                }
                cpu_before = sum(cpu_secs(pid) for pid in cluster.pids)
                result = run_loadgen(job)
                server_cpu = sum(cpu_secs(pid) for pid in cluster.pids) - cpu_before
                latencies = result.pop("latencies_ms")
                row.update(
                    result,
                    stored=stored_messages(cluster),
                    ack_p50_ms=percentile(latencies, 0.5),
                    ack_p99_ms=percentile(latencies, 0.99),
                    server_cpu_us_per_message=(
                        server_cpu / result["acked"] * 1e6 if result["acked"] else None
                    ),
                )
        except STEP_ERRORS as exc:
            row["error"] = str(exc)
        rows.append(row)
    row = {
        "config": "baseline: one commit per message (sqlite3)",
        "senders": 1,
        "inflight": 1,
        "rooms": 1,
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.baseline_commit",
                    "--data-dir",
                    tmp,
                    "--duration",
                    str(args.duration),
                ],
                capture_output=True,
                check=True,
                timeout=args.duration + 60,
            )
        result = json.loads(out.stdout)
        row.update(acks_per_sec=result["rows_per_sec"], stored=result["rows"])
    except STEP_ERRORS as exc:
        row["error"] = str(exc)
    rows.append(row)
    baseline = row.get("acks_per_sec")
    for r in rows:
        if baseline and r.get("acks_per_sec"):
            r["x_commit_per_message"] = r["acks_per_sec"] / baseline
    print("\npersist: messages/s stored durably (acknowledged after commit)")
    print_table(
        [
            ("config", "config", ""),
            ("senders", "senders", ""),
            ("in flight", "inflight", ""),
            ("rooms", "rooms", ""),
            ("stored msg/s", "acks_per_sec", ",.0f"),
            ("vs commit/msg", "x_commit_per_message", ".1f"),
            ("ack p50 ms", "ack_p50_ms", ".1f"),
            ("ack p99 ms", "ack_p99_ms", ".1f"),
            ("acked", "acked", ","),
            ("rows in db", "stored", ","),
            ("unacked", "unacked", ""),
            ("errors", "errors", ""),
            ("srv CPU-µs/msg", "server_cpu_us_per_message", ".0f"),
            ("loadgen CPU", "loadgen_cpu_share", ".0%"),
        ],
        rows,
    )
    for r in rows:
        if "error" in r:
            print(f"  {r['config']}: ERROR {r['error']}")
    return rows


# -- login -------------------------------------------------------------------------

LAG_IDLE_SECS = 3.0


async def login_storm(cluster: ChatCluster, admin_token: str, names: list[str]) -> dict[str, Any]:
    frames: list[tuple[float, float]] = []  # (received at, worst lag since the previous frame)
    storm_end = float("inf")
    after_storm = asyncio.Event()
    async with connect(
        f"{cluster.ws_urls[0]}/ws/admin",
        additional_headers={"Authorization": f"Bearer {admin_token}"},
        compression=None,
    ) as admin:

        async def read_stats() -> None:
            while True:
                frame = orjson.loads(await admin.recv())
                if frame.get("type") == "stats":
                    frames.append((time.monotonic(), frame["loop_lag_ms"]))
                    if frames[-1][0] > storm_end:
                        after_storm.set()

        reader = asyncio.create_task(read_stats())
        try:
            await asyncio.sleep(LAG_IDLE_SECS)
            async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=120) as http:

                async def login(name: str) -> float:
                    started = time.monotonic()
                    r = await http.post(
                        "/api/auth/token", data={"username": name, "password": PASSWORD}
                    )
                    r.raise_for_status()
                    return (time.monotonic() - started) * 1000

                storm_start = time.monotonic()
                durations = sorted(await asyncio.gather(*(login(name) for name in names)))
                storm_end = time.monotonic()
            # The stats frame after the storm covers its last part.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(after_storm.wait(), 3)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    # The first frame covers the server's start-up; frames before the storm are idle.
    idle = [lag for t, lag in frames[1:] if t <= storm_start]
    storm = []
    for (prev_t, _), (t, lag) in itertools.pairwise(frames):
        if t > storm_start and prev_t < storm_end:
            storm.append(lag)
    return {
        "logins": len(names),
        "storm_ms": (storm_end - storm_start) * 1000,
        "login_p50_ms": percentile(durations, 0.5),
        "login_max_ms": durations[-1],
        "idle_max_lag_ms": max(idle, default=None),
        "storm_max_lag_ms": max(storm, default=None),
        "stats_frames_during_storm": len(storm),
    }


def login_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    row: dict[str, Any] = {"config": "product (1 process, SQLite)"}
    try:
        with chat_cluster() as cluster:
            admin_token = cluster.accounts(1)[0]  # The first account is the admin.
            names = cluster.register(args.logins)
            row.update(asyncio.run(login_storm(cluster, admin_token, names)))
    except STEP_ERRORS as exc:
        row["error"] = str(exc)
    print(f"\nlogin: event-loop lag while {args.logins} logins hash at once")
    print_table(
        [
            ("config", "config", ""),
            ("logins", "logins", ""),
            ("all done ms", "storm_ms", ",.0f"),
            ("login p50 ms", "login_p50_ms", ",.0f"),
            ("login max ms", "login_max_ms", ",.0f"),
            ("idle max lag ms", "idle_max_lag_ms", ".1f"),
            ("storm max lag ms", "storm_max_lag_ms", ".1f"),
            ("stats frames", "stats_frames_during_storm", ""),
        ],
        [row],
    )
    if "error" in row:
        print(f"  ERROR {row['error']}")
    return [row]


# -- unread ------------------------------------------------------------------------


def _bulk_messages_sql(room: str, count: int, postgres: bool) -> list[str]:
    """Copies of the room's first message up to `count` messages, and the room's sequence
    moved past them: far faster than posting them, and the same rows."""
    numbers = f"generate_series(2, {count}) AS n(i)" if postgres else "n"
    prefix = (
        ""
        if postgres
        else f"WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) "
    )
    room_id = f"(SELECT id FROM rooms WHERE name = '{room}')"
    return [
        f"{prefix}INSERT INTO messages (room_id, seq, user_id, body, nonce, ts, deleted) "
        f"SELECT m.room_id, n.i, m.user_id, m.body, NULL, m.ts, false "
        f"FROM messages AS m, {numbers} WHERE m.room_id = {room_id} AND m.seq = 1",
        f"UPDATE rooms SET last_seq = {count} WHERE name = '{room}'",
        # What autovacuum does soon after a change this large: fresh statistics.
        *(["ANALYZE messages"] if postgres else []),
    ]


def _run_sql(cluster: ChatCluster, statements: list[str]) -> None:
    url = cluster.env.get("CHAT_DATABASE_URL")
    if url is None:
        with contextlib.closing(sqlite3.connect(cluster.data_dir / "chat.db")) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        return
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def unread_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`GET /api/rooms` for a member of a room with `--unread-messages` unread messages:
    the counts stop at their cap, so the time must not grow with the room."""
    rows: list[dict[str, Any]] = []
    configs = [("product, SQLite", False)]
    if os.environ.get("CHAT_BENCH_POSTGRES") == "1":
        configs.append(("product, PostgreSQL", True))
    for label, postgres in configs:
        row: dict[str, Any] = {"config": label, "messages": args.unread_messages}
        try:
            with chat_cluster(postgres=postgres) as cluster:
                writer, reader = cluster.accounts(2)
                room = cluster.create_room(writer)
                with httpx.Client(base_url=cluster.urls[0], timeout=60) as http:
                    auth = {"Authorization": f"Bearer {reader}"}
                    r = http.get("/api/me", headers=auth)
                    r.raise_for_status()
                    me = r.json()["username"]
                    http.put(f"/api/rooms/{room}/members/{me}", headers=auth).raise_for_status()
                    http.post(
                        f"/api/rooms/{room}/messages",
                        json={"body": "unread " * 10},
                        headers={"Authorization": f"Bearer {writer}"},
                    ).raise_for_status()
                    started = time.monotonic()
                    _run_sql(cluster, _bulk_messages_sql(room, args.unread_messages, postgres))
                    row["insert_secs"] = time.monotonic() - started
                    times = []
                    for _ in range(args.unread_requests):
                        started = time.monotonic()
                        r = http.get("/api/rooms", headers=auth)
                        times.append((time.monotonic() - started) * 1000)
                        r.raise_for_status()
                    unread = next(x["unread"] for x in r.json() if x["name"] == room)
                times.sort()
                row.update(
                    unread=unread,
                    p50_ms=percentile(times, 0.5),
                    p99_ms=percentile(times, 0.99),
                )
        except STEP_ERRORS as exc:
            row["error"] = str(exc)
        rows.append(row)
    print("\nunread: GET /api/rooms for a member of a room of many unread messages")
    print_table(
        [
            ("config", "config", ""),
            ("messages", "messages", ","),
            ("insert s", "insert_secs", ".1f"),
            ("unread shown", "unread", ","),
            ("p50 ms", "p50_ms", ".1f"),
            ("p99 ms", "p99_ms", ".1f"),
        ],
        rows,
    )
    for r in rows:
        if "error" in r:
            print(f"  {r['config']}: ERROR {r['error']}")
    return rows


SCENARIOS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "fanout": fanout_scenario,
    "slow": slow_scenario,
    "idle": idle_scenario,
    "persist": persist_scenario,
    "login": login_scenario,
    "unread": unread_scenario,
}
