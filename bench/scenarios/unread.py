"""`unread`: GET /api/rooms for a member of a room of many unread messages."""

import argparse
import asyncio
import contextlib
import os
import sqlite3
import time
from typing import Any

import httpx

from bench.common import STEP_ERRORS, chat_cluster, percentile, print_table
from bench.servers import ChatCluster


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unread-messages",
        type=int,
        default=1_000_000,
        help="unread: messages stored (by SQL) in the room the reader has not read",
    )
    parser.add_argument(
        "--unread-requests", type=int, default=50, help="unread: GET /api/rooms timed"
    )


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
