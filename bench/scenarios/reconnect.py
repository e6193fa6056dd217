"""`reconnect`: a reconnect storm. Thousands of room sockets lose their server to a restart
and all come back at once with `?since=`, jittered as the browser's page does.

Messages are posted by REST before the stop and on the restarted server while the
sockets come back: every socket must get each of its room's messages exactly once, in
its welcome's history or live. The server's worst event-loop lag since it started is
read from the admin view's first stats frame (the maximum since the last frame, and
no admin view was open before).
"""

import argparse
import asyncio
import os
import subprocess
import time
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from bench.common import (
    STEP_ERRORS,
    chat_cluster,
    int_list,
    print_table,
    read_line,
    send_line,
    start_loadgen,
)
from bench.servers import ChatCluster, cpu_secs

SOURCE_ADDRS = [f"127.0.0.{i}" for i in range(2, 10)]
USERS = 50
ROOMS = 10
MESSAGES_BEFORE = 5
MESSAGES_AFTER = 5
# The bar: every socket back within this many seconds of the restart.
BACK_WITHIN_SECS = 10.0
LAG_MAX_MS = 100.0
CONNECT_TIMEOUT_SECS = 600.0
# How long the sockets get, after the last message is posted, to have them all.
SETTLE_SECS = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storm-sockets",
        type=int_list,
        default=[5000],
        help="reconnect: sockets in the storm, comma-separated",
    )
    parser.add_argument(
        "--storm-loadgens",
        type=int,
        default=2,
        help="reconnect: load-generator processes the sockets are spread over",
    )


def post_messages(url: str, tokens: list[str], rooms: list[str], count: int) -> dict[str, list]:
    """`count` messages in each room by REST, from several users; their ids by room."""
    ids: dict[str, list[int]] = {room: [] for room in rooms}
    with httpx.Client(base_url=url, timeout=60) as http:
        for n in range(count):
            for r, room in enumerate(rooms):
                token = tokens[(n + r) % len(tokens)]
                resp = http.post(
                    f"/api/rooms/{room}/messages",
                    json={"body": f"storm {n}"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                resp.raise_for_status()
                ids[room].append(resp.json()["id"])
    return ids


async def worst_lag_ms(cluster: ChatCluster, admin_token: str) -> float:
    async with connect(
        f"{cluster.ws_urls[0]}/ws/admin",
        additional_headers={"Authorization": f"Bearer {admin_token}"},
        compression=None,
    ) as ws:
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("type") == "stats":
                return float(frame["loop_lag_ms"])


def storm(sockets: int, loadgens: int) -> dict[str, Any]:
    row: dict[str, Any] = {"config": "product (1 process, SQLite)", "sockets": sockets}
    with chat_cluster() as cluster:
        tokens = cluster.accounts(USERS)  # The first one is the admin.
        rooms = [cluster.create_room(tokens[0], tokens[1:]) for _ in range(ROOMS)]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            share = -(-sockets // loadgens)
            for first in range(0, sockets, share):
                procs.append(
                    start_loadgen(
                        {
                            "mode": "storm",
                            "urls": cluster.ws_urls,
                            "rooms": rooms,
                            "tokens": tokens[1:],
                            "first": first,
                            "members": min(share, sockets - first),
                            "local_addrs": SOURCE_ADDRS,
                        }
                    )
                )
            ready = [read_line(proc, CONNECT_TIMEOUT_SECS) for proc in procs]
            opened = sum(r["opened"] for r in ready)
            before = post_messages(cluster.urls[0], tokens[1:], rooms, MESSAGES_BEFORE)
            stopped_at = time.time()
            up_at = cluster.restart()
            cpu_at_up = cpu_secs(cluster.pids[0])
            after = post_messages(cluster.urls[0], tokens[1:], rooms, MESSAGES_AFTER)
            expected = {room: before[room] + after[room] for room in rooms}
            for proc in procs:
                send_line(proc, {"expected": expected, "timeout": SETTLE_SECS})
            results = [read_line(proc, SETTLE_SECS + 60) for proc in procs]
            # Work rather than time (the machine may be busy): the server's CPU from its
            # health check answering until every socket had every message.
            storm_cpu = cpu_secs(cluster.pids[0]) - cpu_at_up
            lag_ms = asyncio.run(worst_lag_ms(cluster, tokens[0]))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
    back_at = sorted(t for r in results for t in r["back_at"])
    last_back = back_at[-1] if back_at else float("nan")
    row.update(
        opened=opened,
        back=len(back_at),
        back_with_since=sum(r["back_with_since"] for r in results),
        restart_secs=up_at - stopped_at,
        all_back_secs=last_back - up_at,
        p50_back_secs=back_at[len(back_at) // 2] - up_at if back_at else float("nan"),
        expected=sum(r["expected_deliveries"] for r in results),
        missed=sum(r["missed"] for r in results),
        duplicated=sum(r["duplicated"] for r in results),
        refused=sum(r["refused"] for r in results),
        failed_connects=sum(r["failed_connects"] for r in results),
        loop_lag_max_ms=lag_ms,
        server_cpu_secs=storm_cpu,
        server_cpu_ms_per_socket=storm_cpu / sockets * 1000,
        load_average=os.getloadavg()[0],
    )
    row["passed"] = (
        row["back"] == sockets
        and row["missed"] == 0
        and row["duplicated"] == 0
        and row["all_back_secs"] <= BACK_WITHIN_SECS
        and lag_ms <= LAG_MAX_MS
    )
    return row


def reconnect_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for sockets in args.storm_sockets:
        try:
            rows.append(storm(sockets, args.storm_loadgens))
        except STEP_ERRORS as exc:
            rows.append({"config": "product (1 process, SQLite)", "sockets": sockets})
            rows[-1]["error"] = str(exc)
            print(f"{sockets} sockets: ERROR {exc}", flush=True)
    print(
        f"\nreconnect: sockets back with since after a restart (bar: all within "
        f"{BACK_WITHIN_SECS:.0f} s, nothing missed or twice, loop lag ≤ {LAG_MAX_MS:.0f} ms)"
    )
    print_table(
        [
            ("config", "config", ""),
            ("sockets", "sockets", ","),
            ("back", "back", ","),
            ("restart s", "restart_secs", ".1f"),
            ("p50 back s", "p50_back_secs", ".1f"),
            ("all back s", "all_back_secs", ".1f"),
            ("expected", "expected", ","),
            ("missed", "missed", ","),
            ("twice", "duplicated", ","),
            ("lag max ms", "loop_lag_max_ms", ".0f"),
            ("srv CPU s", "server_cpu_secs", ".1f"),
            ("CPU ms/socket", "server_cpu_ms_per_socket", ".2f"),
            ("load avg", "load_average", ".1f"),
            ("passed", "passed", ""),
        ],
        rows,
    )
    return rows
