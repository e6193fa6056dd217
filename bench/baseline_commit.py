"""Baseline: store chat messages the obvious way, one commit (and fsync) per message.

Inserts the rows the product stores (the same schema, made by the product's
migrations; the same pragmas: WAL, synchronous=FULL) into a fresh SQLite file from
one thread, taking the room's next `seq` and committing after every row, for
`--duration` seconds; prints `{"rows", "secs", "rows_per_sec"}` as JSON. SQLite has
one writer at a time, so more threads would queue for the same fsyncs.

    python -m bench.baseline_commit --data-dir /tmp/x --duration 5
"""

import argparse
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chat.db import SQLITE_BUSY_TIMEOUT_MS, migrate
from chat.settings import Settings

PAD = "x" * 60


def run(data_dir: Path, duration: float) -> dict[str, Any]:
    settings = Settings(data_dir=data_dir, database_url="")
    migrate(settings)
    conn = sqlite3.connect(data_dir / "chat.db", isolation_level=None)
    try:
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        ):
            conn.execute(f"PRAGMA {pragma}")
        user_id = conn.execute(
            "INSERT INTO users (username, username_key, password_hash, is_admin, token_key,"
            " created_at) VALUES ('bench', 'bench', '-', 0, '-', CURRENT_TIMESTAMP) RETURNING id"
        ).fetchone()[0]
        room_id = conn.execute(
            "INSERT INTO rooms (name, last_seq, created_at)"
            " VALUES ('bench-commit', 0, CURRENT_TIMESTAMP) RETURNING id"
        ).fetchone()[0]
        rows = 0
        started = time.monotonic()
        while time.monotonic() - started < duration:
            conn.execute("BEGIN IMMEDIATE")
            (seq,) = conn.execute(
                "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
                (room_id,),
            ).fetchone()
            ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            conn.execute(
                "INSERT INTO messages (room_id, seq, user_id, body, nonce, ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (room_id, seq, user_id, f"persist|{rows}|{PAD}", f"c-{rows}", ts),
            )
            conn.execute("COMMIT")
            rows += 1
        secs = time.monotonic() - started
    finally:
        conn.close()
    return {"rows": rows, "secs": secs, "rows_per_sec": rows / secs}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_commit")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(run(args.data_dir, args.duration)))


if __name__ == "__main__":
    main()
