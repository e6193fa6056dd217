"""`unread`: GET /api/rooms for a member of many rooms over many messages, some read, some
unread, some with mentions of them."""

import argparse
import asyncio
import contextlib
import os
import sqlite3
import time
from typing import Any

import httpx

from bench.common import STEP_ERRORS, chat_cluster, percentile, print_table
from bench.servers import ChatCluster, cpu_secs

# The rooms of the scenario are named so, in the order of their ids.
PREFIX = "ub-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unread-messages",
        type=int,
        default=1_000_000,
        help="unread: messages stored (by SQL), spread evenly over the rooms",
    )
    parser.add_argument(
        "--unread-rooms", type=int, default=200, help="unread: rooms the reader is a member of"
    )
    parser.add_argument(
        "--unread-requests", type=int, default=100, help="unread: GET /api/rooms timed"
    )


def _bulk_sql(
    template: str, reader: str, writer: str, rooms: int, per_room: int, postgres: bool
) -> list[str]:
    """`rooms` copies of the template room (its members too), each with `per_room`
    messages, a tenth of them by the reader and one in 97 deleted. The reader's marker: a
    quarter of the rooms read to the end, a quarter not at all, a quarter with 300 unread,
    a quarter with 1,500; every third room mentions the reader in one message in 50. Far
    faster than posting them, and the same rows."""

    def series(name: str, first: int, last: int) -> tuple[str, str]:
        """(a WITH clause for SQLite, the FROM item)"""
        if postgres:
            return "", f"generate_series({first}, {last}) AS {name}(i)"
        return (
            f"{name}(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM {name} WHERE i < {last})",
            name,
        )

    def with_(*clauses: str) -> str:
        used = [c for c in clauses if c]
        return f"WITH RECURSIVE {', '.join(used)} " if used else ""

    user = "(SELECT id FROM users WHERE username = '{}')"
    reader_id, writer_id = user.format(reader), user.format(writer)
    template_id = f"(SELECT id FROM rooms WHERE name = '{template}')"
    ours = f"r.name LIKE '{PREFIX}%'"
    # The room's place among the scenario's: what decides its marker and mentions.
    place = f"(r.id - (SELECT min(id) FROM rooms WHERE name LIKE '{PREFIX}%'))"
    room_cte, room_from = series("k", 1, rooms)
    seq_cte, seq_from = series("n", 1, per_room)
    pad = "lpad(k.i::text, 4, '0')" if postgres else "substr('000' || k.i, -4)"
    return [
        f"{with_(room_cte)}INSERT INTO rooms (name, kind, topic, last_seq, created_by, "
        f"created_at) SELECT '{PREFIX}' || {pad}, t.kind, t.topic, {per_room}, t.created_by, "
        f"t.created_at FROM rooms AS t, {room_from} WHERE t.name = '{template}' ORDER BY k.i",
        f"INSERT INTO memberships (room_id, user_id, role, joined_at) "
        f"SELECT r.id, m.user_id, m.role, m.joined_at FROM rooms AS r, memberships AS m "
        f"WHERE {ours} AND m.room_id = {template_id}",
        f"{with_(seq_cte)}INSERT INTO messages (room_id, seq, user_id, body, nonce, ts, deleted) "
        f"SELECT r.id, n.i, CASE WHEN n.i % 10 = 0 THEN {reader_id} ELSE {writer_id} END, "
        f"m.body, NULL, m.ts, n.i % 97 = 0 "
        f"FROM rooms AS r, {seq_from}, messages AS m "
        f"WHERE {ours} AND m.room_id = {template_id} AND m.seq = 1",
        f"INSERT INTO read_markers (user_id, room_id, up_to) "
        f"SELECT {reader_id}, r.id, CASE {place} % 4 WHEN 0 THEN {per_room} WHEN 1 THEN 0 "
        f"WHEN 2 THEN {max(per_room - 300, 0)} ELSE {max(per_room - 1500, 0)} END "
        f"FROM rooms AS r WHERE {ours}",
        f"INSERT INTO mentions (room_id, message_seq, user_id) "
        f"SELECT m.room_id, m.seq, {reader_id} FROM messages AS m JOIN rooms AS r "
        f"ON r.id = m.room_id WHERE {ours} AND {place} % 3 = 0 AND m.seq % 50 = 25",
        # What autovacuum does soon after a change this large: fresh statistics, and the
        # pages marked all-visible.
        *(["VACUUM ANALYZE"] if postgres else ["ANALYZE"]),
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


def _database_cpu_ms(cluster: ChatCluster) -> float:
    """CPU time PostgreSQL's server processes for the cluster's database have used (0 on
    SQLite, which works inside the chat process)."""
    url = cluster.env.get("CHAT_DATABASE_URL")
    if url is None:
        return 0.0
    import asyncpg

    async def pids() -> list[int]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        return [int(r["pid"]) for r in rows]

    total = 0.0
    for pid in asyncio.run(pids()):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/schedstat") as f:
            total += int(f.read().split()[0]) / 1e6
    return total


def unread_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`GET /api/rooms` (all the rooms in one page) for a member of `--unread-rooms` rooms
    over `--unread-messages` messages: the counts stop at their cap, so the time must not
    grow with the rooms' length."""
    rows: list[dict[str, Any]] = []
    configs = [("product, SQLite", False)]
    if os.environ.get("CHAT_BENCH_POSTGRES") == "1":
        configs.append(("product, PostgreSQL", True))
    per_room = max(args.unread_messages // args.unread_rooms, 1)
    for label, postgres in configs:
        row: dict[str, Any] = {
            "config": label,
            "rooms": args.unread_rooms,
            "messages": per_room * args.unread_rooms,
        }
        try:
            with chat_cluster(postgres=postgres) as cluster:
                writer, reader = cluster.accounts(2)
                template = cluster.create_room(writer, [reader])
                with httpx.Client(base_url=cluster.urls[0], timeout=60) as http:
                    auth = {"Authorization": f"Bearer {reader}"}
                    names = [
                        http.get("/api/me", headers={"Authorization": f"Bearer {t}"}).json()[
                            "username"
                        ]
                        for t in (reader, writer)
                    ]
                    http.post(
                        f"/api/rooms/{template}/messages",
                        json={"body": "unread " * 10},
                        headers={"Authorization": f"Bearer {writer}"},
                    ).raise_for_status()
                    started = time.monotonic()
                    statements = _bulk_sql(
                        template, names[0], names[1], args.unread_rooms, per_room, postgres
                    )
                    _run_sql(cluster, statements)
                    row["insert_secs"] = time.monotonic() - started
                    params = {"limit": min(args.unread_rooms + 10, 500)}
                    http.get("/api/rooms", params=params, headers=auth).raise_for_status()
                    cpu = (
                        sum(cpu_secs(pid) * 1000 for pid in cluster.pids),
                        _database_cpu_ms(cluster),
                    )
                    times = []
                    for _ in range(args.unread_requests):
                        started = time.monotonic()
                        r = http.get("/api/rooms", params=params, headers=auth)
                        times.append((time.monotonic() - started) * 1000)
                        r.raise_for_status()
                    shown = [x for x in r.json() if x["name"].startswith(PREFIX)]
                    row["server_cpu_ms"] = (
                        sum(cpu_secs(pid) * 1000 for pid in cluster.pids) - cpu[0]
                    ) / args.unread_requests
                    row["db_cpu_ms"] = (_database_cpu_ms(cluster) - cpu[1]) / args.unread_requests
                times.sort()
                row.update(
                    listed=len(shown),
                    unread=sum(x["unread"] for x in shown),
                    mentions=sum(x["mentions"] for x in shown),
                    p50_ms=percentile(times, 0.5),
                    p95_ms=percentile(times, 0.95),
                    p99_ms=percentile(times, 0.99),
                    load=os.getloadavg()[0],
                )
        except STEP_ERRORS as exc:
            row["error"] = str(exc)
        rows.append(row)
    print("\nunread: GET /api/rooms for a member of many rooms over many messages")
    print_table(
        [
            ("config", "config", ""),
            ("rooms", "rooms", ","),
            ("messages", "messages", ","),
            ("insert s", "insert_secs", ".1f"),
            ("rooms listed", "listed", ","),
            ("unread shown", "unread", ","),
            ("mentions", "mentions", ","),
            ("p50 ms", "p50_ms", ".1f"),
            ("p95 ms", "p95_ms", ".1f"),
            ("p99 ms", "p99_ms", ".1f"),
            ("server CPU ms/req", "server_cpu_ms", ".1f"),
            ("PG CPU ms/req", "db_cpu_ms", ".1f"),
            ("load", "load", ".1f"),
        ],
        rows,
    )
    for done in rows:
        if "error" in done:
            print(f"  {done['config']}: ERROR {done['error']}")
    return rows
