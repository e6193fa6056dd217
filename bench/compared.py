"""The servers `fanout` and `slow` compare: the product and the baselines, and one
open-loop step against any of them."""

import argparse
import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.common import STEP_ERRORS, Server, chat_cluster, measure
from bench.servers import BaselineServer


def server_list(text: str) -> list[str]:
    names = text.split(",")
    unknown = [name for name in names if name not in KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown server {','.join(unknown)}")
    return names


@dataclass(frozen=True)
class Kind:
    label: str
    module: str | None  # None: the product


KINDS = {
    "product": Kind("product (1 process, SQLite, memory://)", None),
    "seed": Kind("seed baseline (naive ConnectionManager)", "bench.baseline_seed"),
    "bare": Kind("bare websockets baseline", "bench.baseline_bare"),
}


@dataclass
class Endpoint:
    """A running server, and how the load generator reaches a fresh room on it."""

    kind: str
    server: Server
    new_room: Callable[[], dict[str, Any]]


@contextlib.contextmanager
def serving(kind: str) -> Iterator[Endpoint]:
    if KINDS[kind].module is None:
        with chat_cluster() as cluster:
            tokens = cluster.accounts(10)

            def product_room() -> dict[str, Any]:
                return {
                    "urls": cluster.ws_urls,
                    "tokens": tokens,
                    "room": cluster.create_room(tokens[0], tokens[1:]),
                }

            yield Endpoint(kind, cluster, product_room)
        return
    module = KINDS[kind].module
    assert module is not None
    server = BaselineServer(module)
    try:
        server.start()

        def baseline_room() -> dict[str, Any]:
            return {
                "urls": server.ws_urls,
                "room": f"bench-{secrets.token_hex(4)}",
                "path_template": "/ws/{room}",
                "welcome": False,
                "frame": "raw",
                "mark": "bench|",
            }

        yield Endpoint(kind, server, baseline_room)
    finally:
        server.stop()


def fanout_step(
    endpoint: Endpoint, members: int, rate: int, duration: float, **extra: Any
) -> dict[str, Any]:
    """One open-loop step in a fresh room; a failed step becomes a row with `error`."""
    row: dict[str, Any] = {
        "config": KINDS[endpoint.kind].label,
        "server": endpoint.kind,
        "members": members,
        "rate": rate,
        "offered_deliveries_per_sec": rate * members,
    }
    job = {
        **endpoint.new_room(),
        "members": members,
        "senders": 2,
        "rate": rate,
        "duration": duration,
        "server_pids": endpoint.server.pids,
        **extra,
    }
    try:
        row.update(measure(endpoint.server, job))
    except STEP_ERRORS as exc:
        row["error"] = str(exc) or type(exc).__name__
    return row
