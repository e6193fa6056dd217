"""The `search` scenario: `GET /api/search` over a database of a million messages.

The messages are written straight into the database (PostgreSQL's index is kept by the
database; SQLite's backlog is then indexed as the writer would, `chat.search_index`, in
the fill's time), in public rooms, private rooms of the searcher and private rooms of
others; then one client asks a mix of queries through
the real server, one at a time, and the latencies are measured at the client.
"""

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

import httpx

from bench.common import STEP_ERRORS, chat_cluster, percentile
from bench.servers import PASSWORD, ChatCluster
from chat import search_index

SEED = 13
VOCABULARY = 20_000
AUTHORS = 20
PUBLIC_ROOMS = 40
OWN_PRIVATE_ROOMS = 5
OTHERS_PRIVATE_ROOMS = 15
BATCH = 20_000
KINDS = ["rare", "medium", "common", "two words", "prefix", "phrase", "in a room", "by a user"]
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["ka", "lo", "mi", "ne"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--search-messages", type=int, default=1_000_000, help="search: messages stored"
    )
    parser.add_argument(
        "--search-queries", type=int, default=50, help="search: queries of each kind"
    )


def vocabulary(rng: random.Random) -> list[str]:
    """Made-up words, most frequent first."""
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        words["".join(rng.choices(SYLLABLES, k=rng.randint(2, 4)))] = None
    return list(words)


def bodies(rng: random.Random, words: list[str], count: int) -> Iterator[str]:
    """Message bodies of 4 to 16 words drawn with Zipf's law (frequency ~ 1 / rank), as in
    natural language: the commonest word is in about half the messages."""
    weights = list(accumulate(1 / rank for rank in range(1, len(words) + 1)))
    for _ in range(count):
        yield " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(4, 16)))


def rows(
    rng: random.Random, words: list[str], count: int, room_ids: list[int], user_ids: list[int]
) -> Iterator[tuple[int, int, int, str, datetime]]:
    """(room id, seq, user id, body, ts): one message a second, ending now."""
    seqs = dict.fromkeys(room_ids, 0)
    start = datetime.now(UTC) - timedelta(seconds=count)
    for i, body in enumerate(bodies(rng, words, count)):
        room = rng.choice(room_ids)
        seqs[room] += 1
        yield room, seqs[room], rng.choice(user_ids), body, start + timedelta(seconds=i)


def fill_sqlite(cluster: ChatCluster, room_ids: list[int], user_ids: list[int], count: int) -> None:
    rng = random.Random(SEED)
    words = vocabulary(rng)
    with contextlib.closing(sqlite3.connect(cluster.data_dir / "chat.db", timeout=60)) as conn:
        batch: list[tuple[int, int, int, str, str]] = []

        def flush() -> None:
            with conn:
                conn.executemany(
                    "INSERT INTO messages (room_id, seq, user_id, body, ts, deleted) "
                    "VALUES (?, ?, ?, ?, ?, 0)",
                    batch,
                )
            batch.clear()

        for room, seq, user, body, ts in rows(rng, words, count, room_ids, user_ids):
            # SQLAlchemy's SQLite DateTime format.
            batch.append((room, seq, user, body, ts.strftime("%Y-%m-%d %H:%M:%S.%f")))
            if len(batch) >= BATCH:
                flush()
        flush()
        with conn:
            conn.execute(
                "UPDATE rooms SET last_seq = "
                "(SELECT coalesce(max(seq), 0) FROM messages WHERE room_id = rooms.id)"
            )
        with conn:
            search_index.everything(conn.cursor())


def fill_postgres(url: str, room_ids: list[int], user_ids: list[int], count: int) -> None:
    import asyncpg

    rng = random.Random(SEED)
    words = vocabulary(rng)

    async def fill() -> None:
        conn = await asyncpg.connect(url)
        try:
            batch: list[tuple[int, int, int, str, datetime, bool]] = []
            for room, seq, user, body, ts in rows(rng, words, count, room_ids, user_ids):
                batch.append((room, seq, user, body, ts, False))
                if len(batch) >= BATCH:
                    await conn.copy_records_to_table(
                        "messages",
                        records=batch,
                        columns=["room_id", "seq", "user_id", "body", "ts", "deleted"],
                    )
                    batch.clear()
            if batch:
                await conn.copy_records_to_table(
                    "messages",
                    records=batch,
                    columns=["room_id", "seq", "user_id", "body", "ts", "deleted"],
                )
            await conn.execute(
                "UPDATE rooms SET last_seq = "
                "(SELECT coalesce(max(seq), 0) FROM messages WHERE room_id = rooms.id)"
            )
            # What autovacuum does after a bulk load (a vacuum for the inserts, since
            # PostgreSQL 13, and statistics), done now rather than some time later: the
            # first queries would otherwise set the rows' hint bits, writing pages.
            await conn.execute("VACUUM (ANALYZE)")
        finally:
            await conn.close()

    asyncio.run(fill())


def ids_of(cluster: ChatCluster, table: str, column: str, values: list[str]) -> list[int]:
    """Database ids of the rows of `table` whose `column` is one of `values`."""
    url = cluster.env.get("CHAT_DATABASE_URL")
    if url is None:
        with contextlib.closing(sqlite3.connect(cluster.data_dir / "chat.db")) as conn:
            marks = ",".join("?" * len(values))
            return [
                r[0]
                for r in conn.execute(f"SELECT id FROM {table} WHERE {column} IN ({marks})", values)
            ]
    import asyncpg

    async def read() -> list[int]:
        conn = await asyncpg.connect(url)
        try:
            found = await conn.fetch(f"SELECT id FROM {table} WHERE {column} = ANY($1)", values)
            return [r["id"] for r in found]
        finally:
            await conn.close()

    return asyncio.run(read())


def token(cluster: ChatCluster, username: str) -> str:
    r = httpx.post(
        f"{cluster.urls[0]}/api/auth/token", data={"username": username, "password": PASSWORD}
    )
    r.raise_for_status()
    value: str = r.json()["access_token"]
    return value


def make_room(cluster: ChatCluster, token: str, name: str, kind: str) -> str:
    r = httpx.post(
        f"{cluster.urls[0]}/api/rooms",
        json={"name": name, "kind": kind},
        headers={"Authorization": f"Bearer {token}"},
    )
    r.raise_for_status()
    return name


def queries(
    rng: random.Random, words: list[str], rooms: list[str], authors: list[str], per_kind: int
) -> list[tuple[str, dict[str, str]]]:
    """(kind, query parameters), the kinds interleaved."""
    sample = list(bodies(random.Random(SEED + 1), words, 1000))
    made: list[tuple[str, dict[str, str]]] = []
    for _ in range(per_kind):
        medium = words[rng.randint(100, 1000)]
        made += [
            ("rare", {"q": words[rng.randint(5000, VOCABULARY - 1)]}),
            ("medium", {"q": medium}),
            ("common", {"q": words[rng.randint(0, 19)]}),
            ("two words", {"q": f"{medium} {words[rng.randint(20, 500)]}"}),
            ("prefix", {"q": words[rng.randint(20, 300)][:3]}),
        ]
        said = rng.choice(sample).split()
        at = rng.randrange(len(said) - 1)
        made += [
            ("phrase", {"q": f'"{said[at]} {said[at + 1]}"'}),
            ("in a room", {"q": medium, "room": rng.choice(rooms)}),
            ("by a user", {"q": medium, "user": rng.choice(authors)}),
        ]
    return made


def measure_queries(
    cluster: ChatCluster, token: str, mix: list[tuple[str, dict[str, str]]]
) -> dict[str, Any]:
    took: dict[str, list[float]] = {kind: [] for kind in KINDS}
    found = 0
    with httpx.Client(
        base_url=cluster.urls[0], headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        for _, params in mix[:20]:  # Warm the caches and the connection.
            http.get("/api/search", params=params).raise_for_status()
        for kind, params in mix:
            started = time.perf_counter()
            r = http.get("/api/search", params=params)
            took[kind].append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
            found += len(r.json()["messages"])
    every = sorted(t for ts in took.values() for t in ts)
    result: dict[str, Any] = {
        "queries": len(every),
        "results_per_query": found / len(every),
        "p50_ms": percentile(every, 0.50),
        "p95_ms": percentile(every, 0.95),
        "p99_ms": percentile(every, 0.99),
    }
    for kind, values in took.items():
        values.sort()
        result[f"{kind} p50_ms"] = percentile(values, 0.50)
        result[f"{kind} p95_ms"] = percentile(values, 0.95)
    return result


def one_config(args: argparse.Namespace, postgres: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": args.search_messages}
    with chat_cluster(postgres=postgres) as cluster:
        names = cluster.register(AUTHORS)
        searcher, other = (token(cluster, name) for name in names[:2])
        rng = random.Random(SEED)
        rooms = [make_room(cluster, other, f"pub-{i}", "public") for i in range(PUBLIC_ROOMS)]
        own = [
            make_room(cluster, searcher, f"mine-{i}", "private") for i in range(OWN_PRIVATE_ROOMS)
        ]
        hidden = [
            make_room(cluster, other, f"theirs-{i}", "private") for i in range(OTHERS_PRIVATE_ROOMS)
        ]
        room_ids = ids_of(cluster, "rooms", "name", rooms + own + hidden)
        user_ids = ids_of(cluster, "users", "username", names)
        started = time.perf_counter()
        url = cluster.env.get("CHAT_DATABASE_URL")
        if url is None:
            fill_sqlite(cluster, room_ids, user_ids, args.search_messages)
        else:
            fill_postgres(url, room_ids, user_ids, args.search_messages)
        row["fill_secs"] = time.perf_counter() - started
        mix = queries(rng, vocabulary(random.Random(SEED)), rooms + own, names, args.search_queries)
        row.update(measure_queries(cluster, searcher, mix))
    return row


def search_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    configs = [("SQLite (FTS5)", False)]
    if os.environ.get("CHAT_BENCH_POSTGRES") == "1":
        configs.append(("PostgreSQL (tsvector + GIN)", True))
    results: list[dict[str, Any]] = []
    for label, postgres in configs:
        row: dict[str, Any] = {"config": label}
        try:
            row.update(one_config(args, postgres))
        except STEP_ERRORS as exc:
            row["error"] = str(exc)
        results.append(row)
    print(f"\nsearch: GET /api/search latency over {args.search_messages:,} messages, one client")
    for row in results:
        if "error" in row:
            print(f"  {row['config']}: ERROR {row['error']}")
            continue
        print(
            f"  {row['config']:<30} p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms  "
            f"p99 {row['p99_ms']:.1f} ms  ({row['queries']} queries, "
            f"{row['results_per_query']:.1f} results each; filled in {row['fill_secs']:.0f} s)"
        )
        for kind in KINDS:
            print(
                f"    {kind:<12} p50 {row[f'{kind} p50_ms']:>7.1f} ms  "
                f"p95 {row[f'{kind} p95_ms']:>7.1f} ms"
            )
    return results
