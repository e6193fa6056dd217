"""What the scenarios share: running the load generator, measuring, printing rows."""

import asyncio
import contextlib
import json
import secrets
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.servers import ChatCluster, cpu_secs

# A rate counts as sustained when nothing is lost and p99 stays under this.
SUSTAINED_P99_MS = 100.0
RESULTS = Path(__file__).resolve().parent / "results"
POSTGRES_ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
# What a load-generator run may take beyond its job's duration (connecting up to a
# thousand sockets, the drain, the closes) before it is killed.
LOADGEN_SLACK_SECS = 120.0


# What a failed step raises: it becomes a row with an "error", and the bench goes on.
STEP_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    OSError,
    ValueError,
    subprocess.SubprocessError,
    httpx.HTTPError,
)


class Server(Protocol):
    @property
    def pids(self) -> list[int]: ...


def int_list(text: str) -> list[int]:
    """An option's comma-separated numbers."""
    return [int(x) for x in text.split(",")]


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The next JSON line a load generator process writes, waiting at most `timeout`."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if not line:
        raise RuntimeError("load generator gave no answer")
    return json.loads(line)


def send_line(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    """One JSON line to a load generator process that takes several."""
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()


def start_loadgen(job: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A load generator process that stays to be talked to, given its first job."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    send_line(proc, job)
    return proc


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def run_loadgen(job: dict[str, Any]) -> dict[str, Any]:
    """Run one load-generator job; the process is killed if it overruns."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.loadgen"],
            input=json.dumps(job).encode(),
            capture_output=True,
            check=True,
            timeout=job.get("duration", 0) + LOADGEN_SLACK_SECS,
        )
    except subprocess.CalledProcessError as exc:
        tail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"load generator failed: {' '.join(tail)}") from None
    return json.loads(out.stdout)


def measure(server: Server, job: dict[str, Any]) -> dict[str, Any]:
    before = sum(cpu_secs(pid) for pid in server.pids)
    result = run_loadgen(job)
    server_cpu = sum(cpu_secs(pid) for pid in server.pids) - before
    # The load generator's figure, when asked for, leaves out connecting the sockets.
    server_cpu = result.pop("server_cpu_secs", server_cpu)
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


def is_sustained(row: dict[str, Any]) -> bool:
    return "error" not in row and row["loss"] == 0 and row["p99_ms"] <= SUSTAINED_P99_MS


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


@contextlib.contextmanager
def chat_cluster(
    processes: int = 1, postgres: bool = False, redis: bool = False
) -> Iterator[ChatCluster]:
    """Running `chat serve` processes on a fresh database, stopped whatever happens."""
    with tempfile.TemporaryDirectory() as tmp:
        pg_url = None
        try:
            env: dict[str, str] = {}
            if postgres:
                pg_url = new_postgres_url()
                env["CHAT_DATABASE_URL"] = pg_url
            if redis:
                env["CHAT_BROKER_URL"] = REDIS_URL
                env["CHAT_REDIS_NAMESPACE"] = f"bench{secrets.token_hex(4)}"
            cluster = ChatCluster(Path(tmp), env, processes)
            try:
                cluster.start()
                yield cluster
            finally:
                cluster.stop()
        finally:
            if pg_url:
                drop_postgres(pg_url)


HEADER = (
    f"{'config':<44} {'members':>7} {'msg/s':>6} {'deliveries/s':>12} {'loss':>8} "
    f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'srv CPU-µs/dlv':>14} {'loadgen CPU':>11}"
)


def print_header() -> None:
    print(HEADER)
    print("-" * len(HEADER))
    print_row.headed = True  # type: ignore[attr-defined]


def print_row(row: dict[str, Any]) -> None:
    if not getattr(print_row, "headed", False):
        print_header()
    if "error" in row:
        print(
            f"{row['config']:<44} {row['members']:>7} {row['rate']:>6} ERROR: {row['error']}",
            flush=True,
        )
        return
    cpu = row["server_cpu_us_per_delivery"]
    flag = " (saturated)" if row["loadgen_cpu_share"] > 0.9 else ""
    notes = "".join(
        f" [{note}]"
        for key, note in (
            ("sender_stalled", "sender blocked"),
            ("sender_closed", "sender closed by server"),
        )
        if row.get(key)
    )
    print(
        f"{row['config']:<44} {row['members']:>7} {row['rate']:>6} "
        f"{row['deliveries_per_sec']:>12,.0f} {row['loss']:>8} {row['p50_ms']:>7.1f} "
        f"{row['p95_ms']:>7.1f} {row['p99_ms']:>7.1f} "
        f"{(f'{cpu:.1f}' if cpu else '-'):>14} {row['loadgen_cpu_share']:>10.0%}{flag}{notes}",
        flush=True,
    )


def print_table(columns: list[tuple[str, str, str]], rows: list[dict[str, Any]]) -> None:
    """Rows as a table: each column is (title, key, format spec, e.g. '>10,.0f')."""
    widths = [max(len(title), 8) for title, _key, _spec in columns]
    widths[0] = max([widths[0]] + [len(str(row.get(columns[0][1], ""))) for row in rows])
    head = " ".join(
        f"{title:<{w}}" if i == 0 else f"{title:>{w}}"
        for i, ((title, _k, _s), w) in enumerate(zip(columns, widths, strict=True))
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        cells = []
        for i, ((_title, key, spec), w) in enumerate(zip(columns, widths, strict=True)):
            value = row.get(key)
            if value is None or (isinstance(value, float) and value != value):
                text = "-"
            elif spec and not isinstance(value, str):
                text = format(value, spec.lstrip("<>"))
            else:
                text = str(value)
            cells.append(f"{text:<{w}}" if i == 0 else f"{text:>{w}}")
        print(" ".join(cells), flush=True)
