"""Drills: watching means watching.

Each drill runs the real daemon and/or watchdog against the paper gateway, injects the fault
from outside (a second client on the watchdog's id, signals, the admin channel, the file
system, a process that reuses a pid, the CLI), asserts the safe outcome, then the accounting
invariant.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from ib_insync import IB
from invariant import assert_books_balance
from procs import HB_TIMEOUT, cli, data, start, stop, stop_watchdog, write_config

from data_lake import Contract, DatabaseError, DataLakeMissing, open_readonly, query_safety_events
from paper_gateway import GatewayConfig
from paper_gateway.instruments import Catalogue
from paper_gateway.testing import eventually
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.heartbeat import Clock, SystemClock, read_heartbeat, write_heartbeat


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def _events(tmp_path, source=None, kind=None):
    try:
        events = query_safety_events(open_readonly(data(tmp_path)))
    except (DataLakeMissing, DatabaseError):
        return []
    return [
        e
        for e in events
        if (source is None or e["source"] == source) and (kind is None or e["kind"] == kind)
    ]


def _kinds(tmp_path, source="watchdog"):
    return [e["kind"] for e in _events(tmp_path, source)]


def _watchdog_refusals(tmp_path):
    return [
        e for e in _events(tmp_path, "gate", "gate_refusal") if "watchdog" in e["reason"].lower()
    ]


def _wd_hb(tmp_path):
    return read_heartbeat(data(tmp_path) / "heartbeat-watchdog.json")


def _main_hb(tmp_path):
    return read_heartbeat(data(tmp_path) / "heartbeat-main.json")


def _connected(tmp_path):
    hb = _wd_hb(tmp_path)
    return hb is not None and hb.session == "connected" and hb.phase == "watching" and hb


def _polls_pass(tmp_path, n, what):
    """Wait until the watchdog has polled n more times (a condition, not a sleep)."""
    start_polls = _wd_hb(tmp_path).cycle
    eventually(
        lambda: _wd_hb(tmp_path).cycle >= start_polls + n, timeout=30, what=f"{n} polls: {what}"
    )


def _status(cfg):
    result = cli("status", "--config", str(cfg), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _positions(admin):
    return {Contract.from_row(p).key: p["quantity"] for p in admin.call("state")["positions"]}


def _take_client_id(port, client_id):
    ib = IB()
    try:
        ib.connect("127.0.0.1", port, clientId=client_id, timeout=2)
    except Exception:
        ib.disconnect()
        return None
    return ib if ib.isConnected() else None


def _dead(pid):
    """Gone, or a zombie (its parent has not reaped it; its sockets are closed)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _first_fill_stored(tmp_path):
    try:
        db = open_readonly(data(tmp_path))
        return list(db.query("SELECT 1 FROM order_intents WHERE status = 'filled'"))
    except (DataLakeMissing, DatabaseError):
        return []


class _StaleClock(Clock):
    def __init__(self, behind_s):
        self.behind_s = behind_s

    def monotonic(self):
        return time.monotonic() - self.behind_s

    def wall(self):
        return time.time() - self.behind_s


# 1 -------------------------------------------------------------------------------------------
def test_a_watchdog_stuck_connecting_does_not_count_as_alive(gateway, admin, tmp_path):
    squatter = _take_client_id(gateway.port, 999)  # someone else holds the watchdog's id
    assert squatter is not None
    cfg = write_config(tmp_path, gateway.port)
    proc = start("run", cfg)
    try:
        eventually(
            lambda: _watchdog_refusals(tmp_path) or admin.call("state")["executions"],
            timeout=60,
            what="the first order refused for want of a watchdog",
        )
        assert admin.call("state")["executions"] == 0, "a position was opened unwatched"
        st = _status(cfg)["watchdog"]
        assert st["present"] and not st["alive"]
        assert st["session"] in ("connecting", "unreachable")
        assert st["last_account_poll_age_s"] is None and st["last_account_poll_at"] is None
        text = cli("status", "--config", str(cfg)).stdout
        assert "NOT ALIVE" in text and "last account poll never" in text
        assert "watchdog_unreachable" in _kinds(tmp_path)
        # the id is free again: the watchdog connects, polls, and trading may start
        squatter.disconnect()
        eventually(lambda: _connected(tmp_path), timeout=30, what="watchdog connected")
        eventually(
            lambda: admin.call("state")["executions"] >= 1, timeout=30, what="a fill once watched"
        )
        st = _status(cfg)["watchdog"]
        assert st["alive"] and st["session"] == "connected"
        assert st["last_account_poll_age_s"] is not None and st["last_account_poll_at"]
    finally:
        squatter.disconnect()
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path))


# 2 -------------------------------------------------------------------------------------------
def test_the_watchdog_childs_exit_stops_new_positions_at_once_and_it_is_restarted(
    gateway, admin, tmp_path
):
    # a long heartbeat timeout: judged by its heartbeat alone, the dead child would look alive
    # for 3 s, several cycles; the main loop watches the child process itself
    cfg = write_config(
        tmp_path, gateway.port, cycle_interval_s=1.0, max_cycle_s=0.9, heartbeat_timeout_s=3.0
    )
    breaker = CircuitBreaker(data(tmp_path))
    breaker.trip(BreakerState.HALTED, "person", "drill: no trading until the watchdog is killed")
    proc = start("run", cfg)
    squatter = None
    try:
        first = eventually(lambda: _connected(tmp_path), timeout=60, what="watchdog connected")
        eventually(lambda: (hb := _main_hb(tmp_path)) and hb.cycle >= 1, timeout=60)
        # keep the restarted child from getting a session, so every cycle from now on runs
        # without a live watchdog: the main loop is paused (it cannot restart the child) from
        # the kill until the squatter holds client id 999
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            os.kill(first.pid, signal.SIGKILL)
            eventually(lambda: _dead(first.pid), timeout=10, what="child gone")
            squatter = eventually(
                lambda: _take_client_id(gateway.port, 999), timeout=10, what="client id 999"
            )
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        breaker.reset(by="drill", reason="orders wanted from the next cycle on")
        eventually(
            lambda: len(_watchdog_refusals(tmp_path)) >= 2 or admin.call("state")["executions"] > 0,
            timeout=30,
            what="two orders refused while the watchdog is dead",
        )
        assert admin.call("state")["executions"] == 0, "a position was opened unwatched"
        eventually(
            lambda: (hb := _wd_hb(tmp_path)) and hb.pid != first.pid,
            timeout=30,
            what="the main loop restarted its watchdog",
        )
        assert not _status(cfg)["watchdog"]["alive"]
        assert _events(tmp_path, "main_loop", "watchdog_exit")
        squatter.disconnect()
        eventually(lambda: _connected(tmp_path), timeout=30, what="new watchdog connected")
        eventually(
            lambda: admin.call("state")["executions"] >= 1,
            timeout=30,
            what="trading resumes under the new watchdog",
        )
        assert proc.poll() is None
    finally:
        if squatter is not None:
            squatter.disconnect()
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path))


# 3 -------------------------------------------------------------------------------------------
def test_halted_means_flat_and_staying_flat_verified_from_the_broker(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port)
    wd = start("watchdog", cfg)
    breaker = CircuitBreaker(data(tmp_path))
    try:
        eventually(lambda: _connected(tmp_path), timeout=30, what="watchdog connected")
        # the gateway stops answering; the main loop dies; its last order fills meanwhile
        admin.call("freeze", seconds=3.0)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        write_heartbeat(data(tmp_path) / "heartbeat-main.json", SystemClock(), 5, "act", dead.pid)
        admin.call("set_position", symbol="AAPL", quantity=30, avg_cost=228.0)
        eventually(lambda: breaker.status().state is BreakerState.HALTED, timeout=15)
        assert breaker.status().source == "watchdog"
        eventually(lambda: not admin.call("state")["frozen"], timeout=15, what="thawed")
        eventually(lambda: _positions(admin) == {}, timeout=20, what="the late fill closed")
        # closed by the watchdog (a cached, empty view confirmed nothing while it was silent)
        closes = [o for o in admin.call("ledger")["orders"] if o["client_id"] == 999]
        assert [(o["symbol"], o["action"], o["status"]) for o in closes][-1] == (
            "AAPL",
            "SELL",
            "Filled",
        )
        eventually(lambda: "flat_confirmed" in _kinds(tmp_path), timeout=10)
        # flat was confirmed; a manual trade appears: it is closed too, still HALTED
        admin.call("set_position", symbol="JPM", quantity=-10, avg_cost=212.0)
        eventually(
            lambda: "halted_not_flat" in _kinds(tmp_path),
            timeout=20,
            what="the new position is seen under HALTED",
        )
        eventually(lambda: _positions(admin) == {}, timeout=20, what="the manual trade closed")
        eventually(lambda: _kinds(tmp_path).count("flat_confirmed") >= 2, timeout=10)
        assert breaker.status().state is BreakerState.HALTED
    finally:
        assert stop(wd) == 0
    assert_books_balance(admin, data(tmp_path), seeded={"AAPL": 30, "JPM": -10})


# 4 -------------------------------------------------------------------------------------------
def test_a_contract_that_cannot_be_closed_holds_up_neither_the_others_nor_the_kill(
    gateway, admin, tmp_path
):
    cat = Catalogue(dt.datetime.now(dt.UTC).date())
    expiry, strike = cat.expiries["AAPL"][-1], cat.strikes["AAPL"][20]
    option = Contract.option("AAPL", expiry, strike, "C").key
    # options are not allowed: the gate refuses every order for one, closes included
    cfg = write_config(tmp_path, gateway.port, allowed_sec_types=["STK"])
    admin.call("set_position", symbol="JPM", quantity=50, avg_cost=212.0)
    admin.call(
        "set_position",
        symbol="AAPL",
        sec_type="OPT",
        expiry=expiry,
        strike=strike,
        right="C",
        quantity=2,
        avg_cost=500.0,
    )
    proc = start("run", cfg)
    try:
        eventually(lambda: _first_fill_stored(tmp_path), timeout=60, what="the loop traded")
        eventually(lambda: _connected(tmp_path), timeout=30, what="watchdog connected")
        os.kill(proc.pid, signal.SIGSTOP)  # frozen main loop
        eventually(lambda: proc.poll() is not None, timeout=20, what="frozen main loop killed")
        assert proc.returncode == -signal.SIGKILL
        eventually(
            lambda: set(_positions(admin)) == {option},
            timeout=20,
            what="everything but the option closed",
        )
        eventually(
            lambda: "flatten_failed" in _kinds(tmp_path),
            timeout=30,
            what="escalation: a person must act",
        )
        kinds = _kinds(tmp_path)
        assert kinds.index("main_killed") < kinds.index("close_refused"), kinds
        refused = [e["reason"] for e in _events(tmp_path, "watchdog", "close_refused")]
        assert refused and all(option in r for r in refused)
        assert CircuitBreaker(data(tmp_path)).status().state is BreakerState.HALTED
        _polls_pass(tmp_path, 4, "the watchdog keeps polling")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path), seeded={"JPM": 50, option: 2})


# 5 -------------------------------------------------------------------------------------------
def test_a_pid_reused_by_another_process_is_never_killed(gateway, admin, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    wd = None
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)  # looks frozen, and it is a python process
        eventually(lambda: psutil.Process(sleeper.pid).status() == psutil.STATUS_STOPPED)
        admin.call("set_position", symbol="AAPL", quantity=20, avg_cost=228.0)
        cfg = write_config(tmp_path, gateway.port)
        data(tmp_path).mkdir(parents=True, exist_ok=True)
        # the dead main loop's last heartbeat: the pid now belongs to the sleeper, whose
        # start time differs from the one recorded
        started = psutil.Process(sleeper.pid).create_time()
        write_heartbeat(
            data(tmp_path) / "heartbeat-main.json",
            _StaleClock(10 * HB_TIMEOUT),
            7,
            "idle",
            pid=sleeper.pid,
            create_time=started - 3600.0,
        )
        wd = start("watchdog", cfg)
        breaker = CircuitBreaker(data(tmp_path))
        eventually(lambda: breaker.status().state is BreakerState.HALTED, timeout=30)
        assert "belongs to another process" in breaker.status().reason
        eventually(lambda: _positions(admin) == {}, timeout=20, what="flat")
        eventually(lambda: "main_kill_skipped" in _kinds(tmp_path), timeout=10)
        _polls_pass(tmp_path, 4, "more chances to kill the wrong process")
        assert sleeper.poll() is None, "the watchdog killed an unrelated process"
        assert psutil.Process(sleeper.pid).status() == psutil.STATUS_STOPPED
        assert "main_killed" not in _kinds(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait(10)
        if wd is not None:
            assert stop(wd) == 0
    assert_books_balance(admin, data(tmp_path), seeded={"AAPL": 20})


# 6 -------------------------------------------------------------------------------------------
def test_a_trip_that_cannot_be_persisted_still_cancels_and_flattens_loudly(
    gateway, admin, tmp_path
):
    cfg = write_config(tmp_path, gateway.port, max_gross_exposure=100000.0)
    wd = start("watchdog", cfg)
    blocker = data(tmp_path) / f".breaker.json.{wd.pid}.tmp"
    output = ""
    try:
        eventually(lambda: _connected(tmp_path), timeout=30, what="watchdog connected")
        blocker.mkdir()  # the breaker file cannot be written (as root, chmod would not stop it)
        admin.call("set_position", symbol="AAPL", quantity=1000, avg_cost=228.0)
        eventually(lambda: _positions(admin) == {}, timeout=20, what="flat without a breaker file")
        eventually(lambda: "flat_confirmed" in _kinds(tmp_path), timeout=10)
        kinds = _kinds(tmp_path)
        assert kinds.index("breaker_not_persisted") < kinds.index("flat_confirmed")
        [trip] = _events(tmp_path, "watchdog", "breaker_trip")
        assert trip["severity"] == "critical" and json.loads(trip["details"])["persisted"] is False
        assert not (data(tmp_path) / "breaker.json").exists()
        blocker.rmdir()  # the disk recovers: the latched trip lands in breaker.json
        breaker = CircuitBreaker(data(tmp_path))
        eventually(lambda: breaker.status().state is BreakerState.HALTED, timeout=10)
        assert breaker.status().source == "watchdog" and "gross exposure" in breaker.status().reason
        eventually(lambda: "breaker_persisted" in _kinds(tmp_path), timeout=10)
    finally:
        if blocker.is_dir():
            blocker.rmdir()
        stop(wd)
        assert wd.stdout is not None
        output = wd.stdout.read().decode()
    assert "CRITICAL" in output and "NOT PERSISTED" in output
    assert_books_balance(admin, data(tmp_path), seeded={"AAPL": 1000})


# 7 -------------------------------------------------------------------------------------------
def test_the_watchdogs_limits_sit_above_the_gates_by_the_configured_margin(
    gateway, admin, tmp_path
):
    cfg = write_config(tmp_path, gateway.port, max_gross_exposure=100000.0, limit_margin_pct=0.25)
    wd = start("watchdog", cfg)
    breaker = CircuitBreaker(data(tmp_path))
    try:
        eventually(lambda: _connected(tmp_path), timeout=30, what="watchdog connected")
        price = admin.call("state")["prices"]["AAPL"]
        at_limit = round(1.05 * 100000 / price)  # just past the gate's limit
        admin.call("set_position", symbol="AAPL", quantity=at_limit, avg_cost=price)
        eventually(
            lambda: admin.call("state")["account"]["GrossPositionValue"] > 100000,
            timeout=10,
        )
        _polls_pass(tmp_path, 12, "a book past the gate's limit, inside the watchdog's")
        assert breaker.status().state is BreakerState.ACTIVE
        assert _positions(admin) == {"AAPL": at_limit}
        beyond = round(1.4 * 100000 / price)  # past the watchdog's limit (125,000)
        admin.call("set_position", symbol="AAPL", quantity=beyond, avg_cost=price)
        eventually(lambda: breaker.status().state is BreakerState.HALTED, timeout=15)
        assert "gross exposure" in breaker.status().reason
        assert "125,000" in breaker.status().reason
        eventually(lambda: _positions(admin) == {}, timeout=20, what="flat")
    finally:
        assert stop(wd) == 0
    assert_books_balance(admin, data(tmp_path), seeded={"AAPL": beyond})


# 8 -------------------------------------------------------------------------------------------
def test_a_reset_after_a_crash_is_not_undone_by_the_dead_loops_old_heartbeat(
    gateway, admin, tmp_path
):
    cfg = write_config(tmp_path, gateway.port)
    proc = start("run", cfg)
    breaker = CircuitBreaker(data(tmp_path))
    try:
        eventually(lambda: _first_fill_stored(tmp_path), timeout=60, what="the loop traded")
        eventually(lambda: _connected(tmp_path), timeout=30, what="watchdog connected")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        eventually(lambda: breaker.status().state is BreakerState.HALTED, timeout=15)
        eventually(lambda: _positions(admin) == {}, timeout=20, what="flat after the crash")
        eventually(lambda: "flat_confirmed" in _kinds(tmp_path), timeout=10)
        ok = cli(
            "breaker",
            "reset",
            "--config",
            str(cfg),
            "--by",
            "alice",
            "--reason",
            "crash handled",
            "--yes",
        )
        assert ok.returncode == 0, ok.stderr
        # the orphaned watchdog keeps judging the dead loop's heartbeat for many polls
        _polls_pass(tmp_path, 8, "the watchdog judges the old heartbeat after the reset")
        status = breaker.status()
        assert status.state is BreakerState.ACTIVE and status.actor == "alice"
        assert _kinds(tmp_path).count("breaker_trip") == 1
        st = _status(cfg)
        assert st["breaker"]["state"] == "ACTIVE" and not st["main"]["alive"]
        assert st["watchdog"]["alive"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path))
