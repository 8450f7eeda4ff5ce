"""The CI soak: one round of every fault the soak benchmark knows, in a seeded order.

Real processes (the paper gateway, the daemon with the offline provider, its watchdog) and
real faults (benchmarks/soak.py); the test waits on the run's outcome, never on time. It
must end with the books balanced, every breaker trip explained by a fault fired just before
it, and every process the faults took down back up as scripted.
"""

from __future__ import annotations

import pytest

from benchmarks.soak import KINDS, run_soak, summary

SEED = 13


@pytest.mark.timeout(600)  # one round of every fault: about 3 minutes on 2 loaded cores
def test_a_seeded_round_of_every_fault_keeps_the_books_and_explains_every_trip(tmp_path):
    # minutes=1: the first round (every kind once) runs to its end whatever the clock says
    result = run_soak(1.0, SEED, work=tmp_path, gaps=(2.0, 5.0), heartbeat_timeout_s=5.0)
    report = summary(result)
    fired = {k: n for k, n in result["faults_fired"].items() if n}
    assert set(fired) == set(KINDS), report
    assert result["books_balance"], report
    assert [t for t in result["trips"] if not t["explained_by"]] == [], report
    kills = [f for f in result["faults"] if f["kind"] == "kill_main" and not f.get("skipped")]
    assert kills and all(f["tripped_s"] is not None for f in kills), report
    assert result["restarts"]["main"] >= len(kills), report
    assert result["problems"] == [], report
    assert result["ok"], report
