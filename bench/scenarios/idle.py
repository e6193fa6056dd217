"""`idle`: server memory per authenticated idle connection."""

import argparse
import asyncio
import itertools
import subprocess
import time
from typing import Any

import orjson
from websockets.asyncio.client import connect

from bench.common import STEP_ERRORS, chat_cluster, int_list, print_table, read_line, start_loadgen
from bench.servers import ChatCluster, rss_bytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


SOURCE_ADDRS = [f"127.0.0.{i}" for i in range(2, 10)]
HOLD_TIMEOUT_SECS = 600.0


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
        procs.append(start_loadgen({**job, "members": min(HOLD_PER_PROCESS, total - start)}))
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
