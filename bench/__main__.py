"""Run the benchmarks: `python -m bench [scenario ...]`; prints tables, writes JSON.

Scenarios:
  cluster   room fan-out on one process (SQLite, memory://), one process and two
            processes on PostgreSQL + Redis, and cross-process delivery latency
"""

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.servers import ChatCluster, cpu_secs

# A rate counts as sustained when nothing is lost and p99 stays under this.
SUSTAINED_P99_MS = 100.0
RESULTS = Path(__file__).resolve().parent / "results"
POSTGRES_ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def run_loadgen(job: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=json.dumps(job).encode(),
        capture_output=True,
        check=True,
    )
    return json.loads(out.stdout)


def measure(cluster: ChatCluster, job: dict[str, Any]) -> dict[str, Any]:
    before = sum(cpu_secs(pid) for pid in cluster.pids)
    result = run_loadgen(job)
    server_cpu = sum(cpu_secs(pid) for pid in cluster.pids) - before
    latencies = result.pop("latencies_ms")
    delivered = result["delivered"]
    return {
        **result,
        "loss": result["expected"] - delivered,
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "server_cpu_us_per_delivery": server_cpu / delivered * 1e6 if delivered else None,
    }


def new_postgres_url() -> str:
    import asyncpg

    name = f"chat_bench_{secrets.token_hex(4)}"

    async def create() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres(url: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        await conn.close()

    asyncio.run(drop())


def with_cluster(processes: int, scaled: bool, body: Callable[[ChatCluster], None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env: dict[str, str] = {}
        pg_url = None
        if scaled:
            pg_url = new_postgres_url()
            env = {
                "CHAT_DATABASE_URL": pg_url,
                "CHAT_BROKER_URL": REDIS_URL,
                "CHAT_REDIS_NAMESPACE": f"bench{secrets.token_hex(4)}",
            }
        cluster = ChatCluster(Path(tmp), env, processes)
        try:
            cluster.start()
            body(cluster)
        finally:
            cluster.stop()
            if pg_url:
                drop_postgres(pg_url)


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
                room = cluster.create_room(tokens[0])
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
        room = cluster.create_room(tokens[0])
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


HEADER = (
    f"{'config':<44} {'members':>7} {'msg/s':>6} {'deliveries/s':>12} {'loss':>6} "
    f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'srv CPU-µs/dlv':>14} {'loadgen CPU':>11}"
)


def print_row(row: dict[str, Any]) -> None:
    if not getattr(print_row, "headed", False):
        print(HEADER)
        print("-" * len(HEADER))
        print_row.headed = True  # type: ignore[attr-defined]
    cpu = row["server_cpu_us_per_delivery"]
    flag = " (saturated)" if row["loadgen_cpu_share"] > 0.9 else ""
    print(
        f"{row['config']:<44} {row['members']:>7} {row['rate']:>6} "
        f"{row['deliveries_per_sec']:>12,.0f} {row['loss']:>6} {row['p50_ms']:>7.1f} "
        f"{row['p95_ms']:>7.1f} {row['p99_ms']:>7.1f} "
        f"{(f'{cpu:.1f}' if cpu else '-'):>14} {row['loadgen_cpu_share']:>10.0%}{flag}",
        flush=True,
    )


SCENARIOS = {"cluster": cluster_scenario}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--members", type=int, default=100, help="sockets in the room")
    parser.add_argument(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[200, 400, 800, 1600],
        help="messages/s to publish, comma-separated",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for name in args.scenarios:
        rows = SCENARIOS[name](args)
        (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
        summary = {}
        for row in rows:
            if row["loss"] == 0 and row["p99_ms"] <= SUSTAINED_P99_MS:
                best = summary.get(row["config"])
                if best is None or row["deliveries_per_sec"] > best:
                    summary[row["config"]] = row["deliveries_per_sec"]
        print(f"\n{name}: sustained deliveries/s (no loss, p99 <= {SUSTAINED_P99_MS:.0f} ms)")
        for config, value in summary.items():
            print(f"  {config:<44} {value:>10,.0f}")


if __name__ == "__main__":
    main()
