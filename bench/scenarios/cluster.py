"""`cluster`: room fan-out on one process (SQLite, memory://), on one and two processes on
PostgreSQL + Redis, and cross-process delivery latency."""

import argparse
from collections.abc import Callable
from typing import Any

from bench.common import SUSTAINED_P99_MS, chat_cluster, is_sustained, measure, print_row
from bench.servers import ChatCluster


def with_cluster(processes: int, scaled: bool, body: Callable[[ChatCluster], None]) -> None:
    with chat_cluster(processes, postgres=scaled, redis=scaled) as cluster:
        body(cluster)


CLUSTER_CONFIGS = [
    ("1 process, SQLite, memory://", 1, False),
    ("1 process, PostgreSQL, Redis", 1, True),
    ("2 processes, PostgreSQL, Redis", 2, True),
]


def cluster_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    members = args.members

    for label, processes, scaled in CLUSTER_CONFIGS:

        def steps(cluster: ChatCluster, label: str = label) -> None:
            tokens = cluster.accounts(10)
            for rate in args.rates:
                room = cluster.create_room(tokens[0], tokens[1:])
                job = {
                    "urls": cluster.ws_urls,
                    "tokens": tokens,
                    "room": room,
                    "members": members,
                    "senders": 2,
                    "rate": rate,
                    "duration": args.duration,
                }
                row = {"config": label, "members": members, "rate": rate, **measure(cluster, job)}
                rows.append(row)
                print_row(row)

        with_cluster(processes, scaled, steps)

    def cross(cluster: ChatCluster) -> None:
        tokens = cluster.accounts(10)
        room = cluster.create_room(tokens[0], tokens[1:])
        job = {
            "urls": cluster.ws_urls[1:],
            "sender_urls": cluster.ws_urls[:1],
            "tokens": tokens,
            "room": room,
            "members": members,
            "senders": 2,
            "rate": args.rates[0],
            "duration": args.duration,
        }
        row = {
            "config": "cross-process: sender on 1, members on 2",
            "members": members,
            "rate": args.rates[0],
            **measure(cluster, job),
        }
        rows.append(row)
        print_row(row)

    with_cluster(2, True, cross)
    return rows


def cluster_summary(rows: list[dict[str, Any]]) -> None:
    summary: dict[str, float] = {}
    for row in rows:
        if is_sustained(row):
            best = summary.get(row["config"])
            if best is None or row["deliveries_per_sec"] > best:
                summary[row["config"]] = row["deliveries_per_sec"]
    print(f"\ncluster: sustained deliveries/s (no loss, p99 <= {SUSTAINED_P99_MS:.0f} ms)")
    for config, value in summary.items():
        print(f"  {config:<44} {value:>10,.0f}")


def run_cluster(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = cluster_scenario(args)
    cluster_summary(rows)
    return rows
