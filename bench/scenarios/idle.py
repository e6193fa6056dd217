"""`idle`: server memory per authenticated idle connection."""

import argparse
import asyncio
import json
import select
import subprocess
import sys
import time
from typing import Any

import orjson
from websockets.asyncio.client import connect

from bench.common import STEP_ERRORS, chat_cluster, int_list, print_table
from bench.servers import ChatCluster, rss_bytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--idle-counts",
        type=int_list,
        default=[1000, 5000, 10_000],
        help="idle: connections, comma-separated",
    )


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
    ) as ws:
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("type") == "stats":
                return frame


def idle_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for count in args.idle_counts:
        row: dict[str, Any] = {"config": "product (1 process, SQLite)", "connections": count}
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
                    "members": count,
                    "local_addrs": SOURCE_ADDRS,
                }
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bench.loadgen"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(json.dumps(job).encode() + b"\n")
                    proc.stdin.flush()
                    ready = read_line(proc, HOLD_TIMEOUT_SECS)
                    time.sleep(2)  # Let the server finish what the connects started.
                    after = rss_bytes(pid)
                    stats = asyncio.run(admin_stats(cluster, tokens[0]))
                    proc.stdin.write(b"\n")
                    proc.stdin.flush()
                    released = read_line(proc, 60)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait()
            row.update(
                opened=ready["opened"],
                failed=ready["failed"],
                errors=ready["errors"],
                connect_secs=ready["connect_secs"],
                server_connections=stats.get("connections"),
                open_at_release=released["open_at_release"],
                rss_before_mib=before / 2**20,
                rss_after_mib=after / 2**20,
                kib_per_connection=(after - before) / max(ready["opened"], 1) / 1024,
                held=released["open_at_release"] == count,
            )
        except STEP_ERRORS as exc:
            row["error"] = str(exc)
        rows.append(row)
        if "error" in row:
            print(f"{count} connections: ERROR {row['error']}", flush=True)
    print("\nidle: server RSS per authenticated idle connection")
    print_table(
        [
            ("config", "config", ""),
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
