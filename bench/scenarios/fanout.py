"""`fanout`: rooms of 10, 100 and 1000 members at rising delivery rates, the product
against the baselines; also draws bench/results/fanout.png."""

import argparse
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    STEP_ERRORS,
    SUSTAINED_P99_MS,
    int_list,
    is_sustained,
    print_row,
    print_table,
)
from bench.compared import KINDS, fanout_step, server_list, serving


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fanout-members",
        type=int_list,
        default=[10, 100, 1000],
        help="fanout: room sizes, comma-separated",
    )
    parser.add_argument(
        "--fanout-targets",
        type=int_list,
        default=[10_000, 20_000, 40_000, 80_000, 160_000, 320_000],
        help="fanout: offered deliveries/s per step (msg/s = target / members)",
    )
    # `slow` reads it too.
    parser.add_argument(
        "--servers",
        type=server_list,
        default=list(KINDS),
        help=f"fanout and slow: servers to run, of {','.join(KINDS)}",
    )


def fanout_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for members in args.fanout_members:
        for kind in args.servers:
            try:
                with serving(kind) as endpoint:
                    kind_rows = []
                    for target in args.fanout_targets:
                        rate = max(1, round(target / members))
                        row = fanout_step(endpoint, members, rate, args.duration)
                        kind_rows.append(row)
                        print_row(row)
                    best = max(
                        (r for r in kind_rows if is_sustained(r)),
                        key=lambda r: r["deliveries_per_sec"],
                        default=None,
                    )
                    half = best["rate"] // 2 if best else 0
                    if kind == "product" and half and all(r["rate"] != half for r in kind_rows):
                        row = fanout_step(endpoint, members, half, args.duration)
                        row["half_of_sustained"] = True
                        kind_rows.append(row)
                        print_row(row)
                    rows += kind_rows
            except STEP_ERRORS as exc:
                # The server did not start: every step of it fails.
                print(f"{KINDS[kind].label}: {exc}", flush=True)
                rows.append(
                    {
                        "config": KINDS[kind].label,
                        "server": kind,
                        "members": members,
                        "rate": 0,
                        "error": str(exc),
                    }
                )
    fanout_summary(rows, args.servers)
    plot_fanout(rows, RESULTS / "fanout.png")
    return rows


def sustained(rows: list[dict[str, Any]], kind: str, members: int) -> dict[str, Any] | None:
    return max(
        (r for r in rows if r["server"] == kind and r["members"] == members and is_sustained(r)),
        key=lambda r: r["deliveries_per_sec"],
        default=None,
    )


def fanout_summary(rows: list[dict[str, Any]], kinds: list[str]) -> None:
    print(
        f"\nfanout: sustained deliveries/s (no loss, p99 <= {SUSTAINED_P99_MS:.0f} ms), "
        "by room size"
    )
    table = []
    for members in sorted({r["members"] for r in rows}):
        line: dict[str, Any] = {"members": members}
        for kind in kinds:
            best = sustained(rows, kind, members)
            line[kind] = best["deliveries_per_sec"] if best else None
        product = line.get("product")
        for base in ("bare", "seed"):
            if product and line.get(base):
                line[f"product/{base}"] = product / line[base]
        best = sustained(rows, "product", members)
        if best:
            # The step at half the product's sustained rate, or the nearest below it.
            below = [
                r
                for r in rows
                if r["server"] == "product"
                and r["members"] == members
                and "error" not in r
                and r["rate"] <= best["rate"] / 2
            ]
            if below:
                near = max(below, key=lambda r: r["rate"])
                line["half_rate"] = near["rate"] * members
                line["half_p99"] = near["p99_ms"]
        table.append(line)
    columns = [("members", "members", "")]
    columns += [(kind, kind, ",.0f") for kind in kinds]
    if "product" in kinds:
        columns += [
            (f"product÷{base}", f"product/{base}", ".2f")
            for base in ("bare", "seed")
            if base in kinds
        ]
        columns += [
            ("product dlv/s at half max", "half_rate", ",.0f"),
            ("its p99 ms", "half_p99", ".1f"),
        ]
    print_table(columns, table)


def plot_fanout(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("(matplotlib is not installed: no plot; see requirements-bench.lock)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["members"] for r in rows})
    fig, axes = plt.subplots(2, len(sizes), figsize=(5 * len(sizes), 8), squeeze=False)
    styles = {"product": "o-", "seed": "s--", "bare": "^:"}
    for col, members in enumerate(sizes):
        top, bottom = axes[0][col], axes[1][col]
        offered_all = [
            r["offered_deliveries_per_sec"]
            for r in rows
            if r["members"] == members and "offered_deliveries_per_sec" in r
        ]
        for kind in KINDS:
            points = sorted(
                (
                    r["offered_deliveries_per_sec"],
                    r["deliveries_per_sec"],
                    r["p99_ms"],
                    r["loadgen_cpu_share"] > 0.9,
                )
                for r in rows
                if r["server"] == kind and r["members"] == members and "error" not in r
            )
            if not points:
                continue
            offered, achieved, p99, saturated = zip(*points, strict=True)
            top.plot(offered, achieved, styles[kind], label=kind)
            bottom.plot(offered, p99, styles[kind], label=kind)
            for ax, values in ((top, achieved), (bottom, p99)):
                marked = [(x, y) for x, y, s in zip(offered, values, saturated, strict=True) if s]
                if marked:
                    ax.plot(*zip(*marked, strict=True), "kx", markersize=9)
        top.set_title(f"{members}-member room (x: load generator saturated)")
        if offered_all:
            span = [min(offered_all), max(offered_all)]
            top.plot(span, span, color="grey", linewidth=0.5, label="offered")
        top.set_yscale("log")
        top.set_xlabel("offered deliveries/s")
        top.set_ylabel("achieved deliveries/s")
        bottom.axhline(SUSTAINED_P99_MS, color="grey", linewidth=0.5)
        bottom.set_yscale("log")
        bottom.set_xlabel("offered deliveries/s")
        bottom.set_ylabel("p99 latency, ms")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")
