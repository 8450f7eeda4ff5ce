"""What the soak found (benchmarks/soak.py), pinned as tests.

Seed 2026, 45-minute run, fault #50 stop_main: the watchdog tripped on the SIGSTOPped main
loop and killed it; the soak restarted the daemon 0.1 s later, just as the old heartbeat
went stale. The watchdog's poll had judged the *old* heartbeat (stale, pid gone), then
`_kill_frozen_main` read the heartbeat file again, found the new daemon's first beat, and
SIGKILLed the new daemon 45 ms after it started ("main_killed: frozen main loop 5775
killed"). A person's restart after a stale-heartbeat trip is killed whenever its first beat
lands inside the watchdog's poll (the poll awaits quotes between judging and killing).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from offline_watchdog import offline_watchdog

from data_lake import open_readonly
from runtime.heartbeat import write_heartbeat


@pytest.fixture
def wd(tmp_path):
    with offline_watchdog(tmp_path, kill_frozen_main=True) as w:
        yield w


def test_the_watchdog_kills_the_main_loop_it_judged_frozen_not_its_successor(wd, tmp_path):
    old = subprocess.Popen([sys.executable, "-c", "pass"])
    old.wait()  # the frozen main loop, already killed
    write_heartbeat(wd.data_dir / "heartbeat-main.json", wd.clock, 7, "idle", pid=old.pid)
    wd.clock.mono += 10  # its last beat is stale
    reasons = wd.check_main()
    assert any("stale" in r for r in reasons)
    successor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # a person restarted the daemon; its first beat lands while the watchdog polls
        write_heartbeat(
            wd.data_dir / "heartbeat-main.json", wd.clock, 0, "starting", pid=successor.pid
        )
        wd._kill_frozen_main(reasons)
        assert wd.store.flush(10)
        killed = [
            r["reason"]
            for r in open_readonly(tmp_path).query(
                "SELECT reason FROM safety_events WHERE kind = 'main_killed'"
            )
        ]
        assert not any(str(successor.pid) in r for r in killed), killed
    finally:
        successor.kill()
        successor.wait(10)
