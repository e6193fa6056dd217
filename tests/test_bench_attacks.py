"""`python -m bench attacks`: the list of attacks and how a run is judged and shown."""

import json
import math
from typing import Any

import pytest

from bench import attackers
from bench.scenarios import attacks


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "attack": "typing-flood",
        "what": "",
        "rss_before_mib": 100.0,
        "rss_peak_growth_mib": 10.0,
        "rss_after_growth_mib": 5.0,
        "killed_at_mib": None,
        "unattacked": {"sends": 200, "lost": 0, "p50_ms": 5.0, "p99_ms": 20.0},
        "attacked": {"sends": 200, "lost": 0, "p50_ms": 5.0, "p99_ms": 30.0},
        "healthz_probes": 10,
        "healthz_failed": 0,
        "healthz_worst_ms": 3.0,
        "attacker": {"frames": 10, "sent_bytes": 230, "opened": 4, "ends": {"4429": 4}},
    }
    return {**base, **changes}


def test_every_attack_has_an_attacker() -> None:
    assert [a.name for a in attacks.ATTACKS] == list(attackers.ATTACKS)
    assert len(attacks.ATTACKS) == 8


def test_within_the_bounds_passes() -> None:
    judged = attacks.judge(row(), p99_floor_ms=10.0)
    assert (judged["verdict"], judged["why"]) == ("PASS", [])
    assert judged["p99_ratio"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"rss_peak_growth_mib": 65.0}, "RSS +65 MiB"),
        ({"killed_at_mib": 1600.0}, "server killed at 1,600 MiB"),
        ({"attacked": {"sends": 200, "lost": 0, "p50_ms": 5.0, "p99_ms": 41.0}}, "p99 x2.0"),
        ({"attacked": {"sends": 200, "lost": 3, "p50_ms": 5.0, "p99_ms": 9.0}}, "3 acks lost"),
        ({"healthz_failed": 2}, "/healthz failed 2x"),
        ({"sign_in_unattacked_ms": 300.0, "sign_in_attacked_ms": math.inf}, "sign-in 300 ms"),
    ],
)
def test_each_bound_can_fail(changes: dict[str, Any], reason: str) -> None:
    judged = attacks.judge(row(**changes), p99_floor_ms=10.0)
    assert judged["verdict"] == "FAIL"
    assert any(why.startswith(reason) for why in judged["why"]), judged["why"]


def test_the_floor_stands_for_a_tiny_unattacked_p99() -> None:
    tiny = {"sends": 200, "lost": 0, "p50_ms": 1.0, "p99_ms": 2.0}
    attacked = {"sends": 200, "lost": 0, "p50_ms": 5.0, "p99_ms": 18.0}
    assert attacks.judge(row(unattacked=tiny, attacked=attacked), 10.0)["verdict"] == "PASS"
    assert attacks.judge(row(unattacked=tiny, attacked=attacked), 1.0)["verdict"] == "FAIL"


def test_report_shows_lost_killed_and_failed_rows(capsys: pytest.CaptureFixture[str]) -> None:
    lost = row(attacked={"sends": 200, "lost": 200, "p50_ms": math.inf, "p99_ms": math.inf})
    killed = row(attack="ping-flood", killed_at_mib=1600.0, rss_after_growth_mib=None)
    killed["attacker"] = {"sent_bytes": 2**30, "opened": 4, "sockets": 4, "ends": {}}
    failed = {"attack": "slowloris", "what": "", "error": "server did not come up"}
    rows = [attacks.judge(r, 10.0) for r in (lost, killed, failed)]
    attacks.print_report(rows)
    out = capsys.readouterr().out
    assert "lost" in out and "killed" in out and "server did not come up" in out
    assert out.count("FAIL") == 3
    # The rows as written to JSON: strict JSON, no Infinity.
    json.loads(json.dumps([attacks.finite(r) for r in rows], allow_nan=False))


def test_nothing_measured_is_no_pass() -> None:
    empty = {"sends": 0, "lost": 0, "p50_ms": math.nan, "p99_ms": math.nan}
    judged = attacks.judge(row(attacked=empty), 10.0)
    assert judged["verdict"] == "FAIL"
    assert judged["why"] == ["no messages measured"]
