"""`persist`: messages/s durably stored from concurrent senders, against committing
every message on its own (bench.baseline_commit)."""

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from typing import Any

from bench.common import STEP_ERRORS, chat_cluster, percentile, print_table, run_loadgen
from bench.servers import ChatCluster, cpu_secs


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
