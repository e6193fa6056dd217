"""`slow`: the others' latency in a room with one member that never reads, against the
same room without it; the product and the seed baseline."""

import argparse
from typing import Any

from bench.common import STEP_ERRORS, print_row, print_table
from bench.compared import KINDS, fanout_step, serving


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # `--servers` is fanout's.
    parser.add_argument("--slow-members", type=int, default=100, help="slow: room size")
    parser.add_argument("--slow-rate", type=int, default=200, help="slow: messages/s")
    parser.add_argument(
        "--slow-prefill",
        type=int,
        default=100,
        help="slow: 3,000-character messages sent first, to fill the non-reader's buffers",
    )


def slow_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for kind in [k for k in args.servers if k in ("product", "seed")]:
        for slow in (0, 1):
            try:
                # A fresh server per run: a stalled run must not slow down the next.
                with serving(kind) as endpoint:
                    row = fanout_step(
                        endpoint,
                        args.slow_members,
                        args.slow_rate,
                        args.duration,
                        slow_members=slow,
                        prefill=args.slow_prefill,
                    )
            except STEP_ERRORS as exc:
                row = {"members": args.slow_members, "rate": args.slow_rate, "error": str(exc)}
            row["config"] = KINDS[kind].label.split(" (")[0] + (
                ", + 1 non-reading member" if slow else ", all members read"
            )
            row["server"] = kind
            row["non_readers"] = slow
            rows.append(row)
            print_row(row)
    print(
        f"\nslow: the {args.slow_members} reading members at {args.slow_rate} msg/s, "
        "without / with one member that never reads"
    )
    table = []
    for row in rows:
        lost_share = row["loss"] / row["expected"] if row.get("expected") else 0.0
        line = {
            "config": row["config"],
            # Over 1 % lost: the p99 of what did arrive says nothing about the rest.
            "p99": "lost" if lost_share > 0.01 else row.get("p99_ms"),
            "delivered": row.get("delivered"),
            "expected": row.get("expected"),
            "loss": row.get("loss"),
            "sent": row.get("sent"),
            "notes": ", ".join(
                text
                for text in (
                    row.get("error"),
                    "sender blocked" if row.get("sender_stalled") else None,
                    "sender closed" if row.get("sender_closed") else None,
                    *(
                        (
                            f"non-reader dropped (close {s.get('close_code')})"
                            if s["dropped"]
                            else f"non-reader still open, {s['frames_waiting']} frames waiting"
                        )
                        for s in row.get("slow_members", [])
                    ),
                )
                if text
            )
            or "-",
        }
        table.append(line)
    print_table(
        [
            ("config", "config", ""),
            ("others' p99 ms", "p99", ".1f"),
            ("sent", "sent", ""),
            ("delivered", "delivered", ","),
            ("of expected", "expected", ","),
            ("", "notes", "<"),
        ],
        table,
    )
    return rows
