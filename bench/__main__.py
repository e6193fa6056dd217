"""Run the benchmarks: `python -m bench [scenario ...]`; prints tables, writes JSON.

Scenarios:
  cluster   room fan-out on one process (SQLite, memory://), one process and two
            processes on PostgreSQL + Redis, and cross-process delivery latency
  fanout    rooms of 10, 100 and 1000 members at rising delivery rates: the product
            (1 process, SQLite, memory://) against the seed tutorial's naive chat
            (bench.baseline_seed) and a bare `websockets` relay (bench.baseline_bare);
            also writes bench/results/fanout.png
  slow      the others' latency in a 100-member room with one member that never
            reads, against the same room without it: product and seed baseline
  idle      server memory per authenticated idle connection, 1k to 10k connections
  persist   messages/s durably stored from 20 concurrent senders (closed loop, acks),
            against committing every message on its own (bench.baseline_commit);
            also on PostgreSQL when CHAT_BENCH_POSTGRES=1
  login     the event loop's worst lag while 20 logins hash their passwords at once
  unread    GET /api/rooms p50/p95 for a member of 200 rooms over 1,000,000 messages,
            some read, some unread, some with mentions (bounded counts); also on
            PostgreSQL when CHAT_BENCH_POSTGRES=1
  search    GET /api/search p50/p95 over 1,000,000 messages (written straight into the
            database) for a mix of queries, one client; also on PostgreSQL when
            CHAT_BENCH_POSTGRES=1
  reconnect 5,000 room sockets reconnecting with `since` after a server restart,
            jittered as the browser does: the time until all are back, messages missed
            or delivered twice, the server's worst event-loop lag (--storm-sockets)
  attacks   hostile clients (ping and typing floods, endless headers, slowloris,
            registration, room and reconnect floods, 1 MB usernames), each for
            --duration seconds against a fresh server: its RSS growth and the others'
            acknowledgement p99 against unattacked, PASS or FAIL against the bounds

Without a scenario, all of them run. Each writes bench/results/<scenario>.json.
"""

import argparse
import contextlib
import json
import sys
from typing import Any

from bench import scenarios
from bench.common import RESULTS, print_row
from bench.scenarios import SCENARIOS
from bench.servers import raise_open_files_limit


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Checked below: Python 3.11's argparse compares a missing `*` argument, as a
    # whole list, with the choices, so that no scenario would be an error.
    parser.add_argument(
        "scenarios", nargs="*", metavar="scenario", help=f"of {', '.join(SCENARIOS)} (all)"
    )
    parser.add_argument("--members", type=int, default=100, help="sockets in the room")
    parser.add_argument(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[200, 400, 800, 1600],
        help="messages/s to publish, comma-separated",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print every scenario's rows as one JSON object on stdout (the tables go to stderr)",
    )
    scenarios.add_arguments(parser)
    args = parser.parse_args()
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    # 1000-member rooms and 10,000 idle sockets: the servers and load generators
    # started from here inherit the raised limit.
    raise_open_files_limit()
    RESULTS.mkdir(exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        for name in args.scenarios or list(SCENARIOS):
            print(f"\n== {name} ==", flush=True)
            print_row.headed = False  # type: ignore[attr-defined]
            rows = results[name] = SCENARIOS[name].run(args)
            (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
