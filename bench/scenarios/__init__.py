"""The scenarios of `python -m bench`, one module each, in the order a full run takes them.

A scenario is a function from the parsed options to the rows it measured (written to
bench/results/<name>.json), and the options of its own it adds to the command line.
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.scenarios import (
    attacks,
    cluster,
    fanout,
    idle,
    login,
    persist,
    reconnect,
    search,
    slow,
    unread,
)


@dataclass(frozen=True)
class Scenario:
    run: Callable[[argparse.Namespace], list[dict[str, Any]]]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


SCENARIOS: dict[str, Scenario] = {
    "cluster": Scenario(cluster.run_cluster),
    "fanout": Scenario(fanout.fanout_scenario, fanout.add_arguments),
    "slow": Scenario(slow.slow_scenario, slow.add_arguments),
    "idle": Scenario(idle.idle_scenario, idle.add_arguments),
    "persist": Scenario(persist.persist_scenario, persist.add_arguments),
    "login": Scenario(login.login_scenario, login.add_arguments),
    "unread": Scenario(unread.unread_scenario, unread.add_arguments),
    "search": Scenario(search.search_scenario, search.add_arguments),
    "reconnect": Scenario(reconnect.reconnect_scenario, reconnect.add_arguments),
    "attacks": Scenario(attacks.attacks_scenario, attacks.add_arguments),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every scenario's own options."""
    for scenario in SCENARIOS.values():
        if scenario.add_arguments is not None:
            scenario.add_arguments(parser)
