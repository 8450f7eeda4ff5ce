"""Drills: the database under attack from outside while the daemon trades.

Each drill runs the real daemon and watchdog against the paper gateway, injects the fault from
another process or the file system, asserts the safe outcome, then the accounting invariant.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from invariant import assert_books_balance
from procs import HB_TIMEOUT, cli, data, heartbeat, start, stop, stop_watchdog, write_config

from data_lake import (
    DatabaseError,
    DataLakeMissing,
    open_readonly,
    query_safety_events,
    query_trades,
)
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.heartbeat import read_heartbeat

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def _trades(tmp_path):
    try:
        return query_trades(open_readonly(data(tmp_path)))
    except (DataLakeMissing, DatabaseError):  # not created (or not migrated) yet
        return []


def _kinds(tmp_path, source=None):
    events = query_safety_events(open_readonly(data(tmp_path)))
    return [e["kind"] for e in events if source is None or e["source"] == source]


def test_a_write_lock_held_longer_than_the_heartbeat_timeout_freezes_nothing(
    gateway, admin, tmp_path
):
    cfg = write_config(tmp_path, gateway.port)
    proc = start("run", cfg)
    hb_path = data(tmp_path) / "heartbeat-main.json"
    try:
        eventually(lambda: _trades(tmp_path), timeout=40, what="the first fill is recorded")
        lock_s = 5 * HB_TIMEOUT
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(data(tmp_path) / "trading.sqlite3"), str(lock_s)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        cycle_at_lock = heartbeat(hb_path).cycle
        # events produced while the database cannot be written
        admin.call("error", code=1100, msg="Connectivity between IB and TWS has been lost")
        admin.call("error", code=1102, msg="Connectivity restored - data maintained")
        worst = 0.0
        while locker.poll() is None:
            hb = read_heartbeat(hb_path)
            assert hb is not None
            worst = max(worst, time.monotonic() - hb.mono_ts)
            assert proc.poll() is None, "the main loop died during the lock"
            time.sleep(0.02)
        assert locker.returncode == 0
        assert worst < HB_TIMEOUT, f"heartbeat went {worst:.2f}s stale during the lock"
        assert heartbeat(hb_path).cycle > cycle_at_lock, "cycles stopped during the lock"
        assert CircuitBreaker(data(tmp_path)).status().state is BreakerState.ACTIVE
        # nothing produced during the lock was dropped: both sessions' records land after it
        eventually(
            lambda: (
                _kinds(tmp_path, "main_loop").count("connectivity") >= 2
                and _kinds(tmp_path, "watchdog").count("connectivity") >= 2
            ),
            timeout=15,
            what="connectivity events of the lock period are stored",
        )
        status = cli("status", "--config", str(cfg), "--json")
        assert status.returncode == 0, status.stderr
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert "breaker_trip" not in _kinds(tmp_path)
    assert_books_balance(admin, data(tmp_path))
