"""`login`: the event loop's worst lag while many logins hash their passwords at once."""

import argparse
import asyncio
import contextlib
import itertools
import time
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from bench.common import STEP_ERRORS, chat_cluster, percentile, print_table
from bench.servers import PASSWORD, ChatCluster


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logins", type=int, default=20, help="login: concurrent logins")


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
