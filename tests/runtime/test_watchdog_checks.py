"""The watchdog's judgement on an injected clock, with real processes for the PID states."""

import asyncio
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import psutil
import pytest
from lake import rows
from offline_watchdog import offline_watchdog

from paper_gateway.testing import eventually
from runtime.config import parse_config
from runtime.heartbeat import write_heartbeat

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wd(tmp_path):
    with offline_watchdog(tmp_path) as w:
        yield w


def beat(w, pid=None, cycle=1, phase="idle"):
    write_heartbeat(w.data_dir / "heartbeat-main.json", w.clock, cycle, phase, pid=pid)


def test_fresh_heartbeat_of_a_running_process_is_healthy(wd):
    beat(wd)
    assert wd.check_main() == []


def test_stale_heartbeat_is_judged_on_the_monotonic_clock(wd):
    beat(wd)
    wd.clock.wall_s += 86_400  # wall clock jumps a day (NTP step): no false trip
    assert wd.check_main() == []
    wd.clock.mono += 5.5  # monotonic time really passes: the trip is not missed
    wd.clock.wall_s -= 90_000
    assert wd.check_main() == ["main heartbeat stale: 5.5s old (limit 5s)"]


def test_heartbeat_vanishing_after_it_was_seen_is_a_fault(wd):
    beat(wd)
    wd.check_main()
    (wd.data_dir / "heartbeat-main.json").write_text("{garbage")
    assert wd.check_main() == ["main heartbeat missing or unreadable"]


def test_clean_stop_is_not_a_fault(wd):
    beat(wd, phase="stopped")
    wd.clock.mono += 1000
    assert wd.check_main() == []


def test_no_heartbeat_ever_is_reported_but_does_not_trip(wd):
    wd.clock.mono += 60
    assert wd.check_main() == []
    assert wd.warned_absent


def test_cycle_without_progress_trips(wd):
    limit = wd.cfg.loop.cycle_interval_s + wd.cfg.loop.max_cycle_s + 5.0
    for _ in range(3):  # the heartbeat stays fresh, but the cycle number never moves
        beat(wd, cycle=4)
        assert wd.check_main() == []
        wd.clock.mono += limit / 2 - 0.1
    beat(wd, cycle=4)
    wd.clock.mono += 0.5
    beat(wd, cycle=4)
    assert wd.check_main()[0].startswith("no cycle progress for")


def test_gone_zombie_and_stopped_processes_are_faults(wd):
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    beat(wd, pid=done.pid)
    assert wd.check_main() == [f"main loop process {done.pid} is gone"]

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    eventually(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE)
    beat(wd, pid=zombie.pid)
    assert wd.check_main() == [f"main loop process {zombie.pid} is a zombie"]
    zombie.wait()

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)
        eventually(lambda: psutil.Process(sleeper.pid).status() == psutil.STATUS_STOPPED)
        beat(wd, pid=sleeper.pid)
        assert wd.check_main() == [f"main loop process {sleeper.pid} is stopped (SIGSTOP)"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_flatten_without_a_gateway_says_so_instead_of_confirming_flat(wd):
    assert wd.broker.client_id == 999  # the watchdog's own session, never connected here
    assert wd.broker.positions() == []  # a disconnected session knows no positions ...
    assert asyncio.run(wd.flatten(1)) is False  # ... which is not the same as flat
    kinds = [r["kind"] for r in rows(wd.store, "SELECT kind FROM safety_events")]
    assert kinds == ["flatten_blocked"]


def test_a_pid_reused_by_another_process_is_a_dead_main_loop(wd):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(sleeper.pid).create_time()
        write_heartbeat(
            wd.data_dir / "heartbeat-main.json",
            wd.clock,
            1,
            "idle",
            pid=sleeper.pid,
            create_time=started - 100,
        )
        [reason] = wd.check_main()
        assert reason.startswith(f"main loop process {sleeper.pid} is gone")
        assert "belongs to another process" in reason
    finally:
        sleeper.kill()
        sleeper.wait()


def _reset(wd, generation):
    from runtime.breaker import BreakerState, BreakerStatus

    wd._note_breaker(BreakerStatus(BreakerState.HALTED, "", "watchdog", "trip", generation - 1))
    wd._note_breaker(
        BreakerStatus(BreakerState.ACTIVE, "", "person", "looked", generation, actor="alice")
    )


def test_after_a_reset_a_dead_loops_old_heartbeat_does_not_re_trip(wd):
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    beat(wd, pid=done.pid)
    assert wd.check_main() == [f"main loop process {done.pid} is gone"]
    _reset(wd, 2)
    for _ in range(5):  # the dead loop is absent now, however long the watchdog looks
        wd.clock.mono += 3.0
        assert wd.check_main() == []
    beat(wd)  # a new main loop beats after the reset: judged as usual
    assert wd.check_main() == []
    wd.clock.mono += 5.5
    assert wd.check_main()[0].startswith("main heartbeat stale: 5.5s")


def test_after_a_reset_a_frozen_loops_heartbeat_is_judged_from_the_reset(wd):
    beat(wd)  # this process: it exists, it just stopped beating
    wd.clock.mono += 20
    assert wd.check_main()[0].startswith("main heartbeat stale: 20.0s")
    _reset(wd, 2)
    wd.clock.mono += 4.9
    assert wd.check_main() == []  # within the timeout, measured from the reset
    wd.clock.mono += 0.6
    assert wd.check_main() == ["main heartbeat stale: 5.5s old (limit 5s)"]


def test_the_watchdogs_limits_sit_above_the_gates_by_the_margin(wd):
    r = wd.cfg.risk
    assert wd.cfg.watchdog.limit_margin_pct == 0.10  # the documented default
    loss, gross, n = wd.account_limits()
    assert loss == pytest.approx(r.max_daily_loss * 1.1)
    assert gross == pytest.approx(r.max_gross_exposure * 1.1)
    assert n == r.max_open_positions + 1


@pytest.mark.parametrize("bad", [-0.01, 1.5, "10%"])
def test_the_limit_margin_is_validated_at_load(bad):
    from runtime.config import ConfigError

    data = tomllib.loads((ROOT / "config/paper.toml").read_text())
    data["watchdog"]["limit_margin_pct"] = bad
    with pytest.raises(ConfigError, match=r"watchdog\.limit_margin_pct"):
        parse_config(data)
