"""Drills: order accounting under outside faults (issue 8, "one daemon, one truth, nothing lost").

Each drill runs the real daemon and watchdog against the paper gateway, injects the fault from
outside (another API client, the admin channel, another process holding the database, a
restart), asserts the safe outcome, then the accounting invariant.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ib_insync import IB, LimitOrder, Stock
from invariant import OUR_CLIENTS, assert_books_balance
from procs import cli, data, heartbeat, start, stop, stop_watchdog, write_config

from data_lake import (
    DatabaseError,
    DataLakeMissing,
    Store,
    get_intent,
    insert_intent,
    open_readonly,
    query_safety_events,
    reject_streak,
    update_intent,
)
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually

OTHER = 7  # the client id of "another daemon" (or a person's TWS session)
STILL = 3600.0  # prices move only when a drill moves them: quotes are old, not stale
CLIPS = GatewayConfig(tick_interval_s=0.0, account_push_interval_s=0.1, partial_fill_above=5.0)

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


@pytest.fixture
def gateway_config(request: pytest.FixtureRequest) -> GatewayConfig:
    """Prices move only when a drill says so; `indirect` parametrization may ask for clips."""
    return getattr(
        request, "param", GatewayConfig(tick_interval_s=0.0, account_push_interval_s=0.1)
    )


# --- helpers ----------------------------------------------------------------------------------
def _read(tmp_path: Path, fn: Any, *args: Any) -> Any:
    try:
        return fn(open_readonly(data(tmp_path)), *args)
    except (DataLakeMissing, DatabaseError):
        return None


def _status(tmp_path: Path, ref: str) -> str | None:
    intent = _read(tmp_path, get_intent, ref)
    return intent["status"] if intent else None


def _events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    return _read(tmp_path, query_safety_events, kind) or []


def _cycles_done(tmp_path: Path) -> int:
    rows = _read(
        tmp_path, lambda db: list(db.query("SELECT id FROM cycles WHERE finished_at IS NOT NULL"))
    )
    return len(rows or [])


def _wait_cycles(tmp_path: Path, n: int, timeout: float = 40.0) -> None:
    """Wait until n more cycles have finished."""
    target = _cycles_done(tmp_path) + n
    eventually(lambda: _cycles_done(tmp_path) >= target, timeout=timeout, what=f"{n} more cycles")


def _orders(admin: Any, client_id: int) -> list[dict[str, Any]]:
    return [o for o in admin.call("ledger")["orders"] if o["client_id"] == client_id]


def _execs(admin: Any, client_id: int = 1) -> list[dict[str, Any]]:
    return [e for e in admin.call("ledger")["executions"] if e["client_id"] == client_id]


def _seed_intent(tmp_path: Path, ref: str, status: str = "submitted", **kw: Any) -> None:
    """Store an intent as an earlier daemon would have (its order sent: `submitted`)."""
    store = Store.open(data(tmp_path), busy_timeout_ms=200, name="drill")
    try:
        intent = {
            "order_ref": ref,
            "source": "commander",
            "symbol": "MSFT",
            "sec_type": "STK",
            "action": "BUY",
            "quantity": 10,  # not the daemon's 20: the rebuilt duplicate guard would refuse those
            "order_type": "LMT",
            "limit_price": 1.0,
            "tif": "DAY",
            **kw,
        }
        assert store.call(insert_intent, intent, timeout=5)
        store.call(update_intent, ref, status=status, timeout=5)
    finally:
        store.close(5)


def _rest_order(ib: IB, ref: str, qty: float = 10, price: float = 1.0) -> Any:
    """Another session places a buy limit far below the market: it rests."""
    order = LimitOrder("BUY", qty, price, orderRef=ref, tif="DAY")
    return ib.placeOrder(Stock("MSFT", "SMART", "USD"), order)


# --- the drills -------------------------------------------------------------------------------
def test_another_clients_working_order_is_not_resent_and_its_cancel_converges(
    gateway, admin, connect, tmp_path
):
    """A second session (another client id) reconciles the first one's live order: it is
    seen (reqAllOpenOrders), its intent stays `submitted`, nothing is re-sent; when its owner
    cancels it, our intent follows within a cycle, without a restart; only then do we trade."""
    ref = "cmd-c1-first0daemon"
    _seed_intent(tmp_path, ref)
    other = connect(OTHER)
    _rest_order(other, ref)
    eventually(lambda: admin.call("state")["open_orders"], timeout=5, what="order resting")
    cfg = write_config(tmp_path, gateway.port, quote_max_age_s=STILL)
    proc = start("run", cfg)
    try:
        _wait_cycles(tmp_path, 2)
        assert _status(tmp_path, ref) == "submitted"
        assert not _events(tmp_path, "unresolved_intent")
        assert _orders(admin, 1) == [], "the first daemon's working order was re-sent"
        other.cancelOrder(other.openTrades()[0].order)
        eventually(
            lambda: _status(tmp_path, ref) == "cancelled",
            timeout=15,
            what="intent follows the other session's cancel",
        )
        eventually(lambda: _execs(admin), timeout=20, what="trading resumes on MSFT")
        assert proc.poll() is None
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert [o["order_ref"] for o in _orders(admin, OTHER)] == [ref]
    assert_books_balance(admin, data(tmp_path), clients=(*OUR_CLIENTS, OTHER))


def test_a_sent_intent_unknown_to_the_broker_blocks_its_contract_until_a_person_resolves_it(
    gateway, admin, tmp_path
):
    ref = "cmd-c1-lost0order00"
    _seed_intent(tmp_path, ref)
    cfg = write_config(tmp_path, gateway.port, quote_max_age_s=STILL)
    proc = start("run", cfg)
    try:
        eventually(lambda: _status(tmp_path, ref) == "unresolved", timeout=20, what="unresolved")
        [event] = eventually(
            lambda: _events(tmp_path, "unresolved_intent"), timeout=5, what="safety event"
        )
        assert event["severity"] == "critical" and event["order_ref"] == ref
        eventually(
            lambda: any(
                "unresolved order intent" in e["reason"] for e in _events(tmp_path, "gate_refusal")
            ),
            timeout=30,
            what="the gate refuses MSFT",
        )
        assert _orders(admin, 1) == [], "an order went out for a blocked contract"
        refused = cli("intent", "resolve", ref, "--config", str(cfg))
        assert refused.returncode == 2 and "--by" in refused.stderr
        ok = cli(
            "intent", "resolve", ref, "--config", str(cfg),
            "--by", "alice", "--reason", "checked at the broker: never arrived",
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert _status(tmp_path, ref) == "cancelled"
        eventually(lambda: _execs(admin), timeout=20, what="trading resumes on MSFT")
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    [resolved] = eventually(lambda: _events(tmp_path, "intent_resolved"), timeout=5)
    assert "alice" in resolved["details"]
    assert_books_balance(admin, data(tmp_path))


@pytest.mark.parametrize("gateway_config", [CLIPS])  # replaces the fixture
def test_the_watchdogs_global_cancel_converges_the_intents_of_a_running_daemon(
    gateway, admin, tmp_path
):
    """Panic (the watchdog's code, its own session) cancels every order at the broker; the
    running daemon's intent shows the cancel, and `status` shows no dead order as open. The
    202 "Cancelled by global cancel" its resting order gets is a cancel, not a reject."""
    cfg = write_config(tmp_path, gateway.port, quote_max_age_s=STILL)
    proc = start("run", cfg)
    try:
        eventually(lambda: _execs(admin), timeout=30, what="first clip filled")
        [order] = _orders(admin, 1)
        assert order["status"] == "Submitted" and order["filled"] == 5  # 15 still working
        panic = cli("panic", "--config", str(cfg), "--by", "drill", "--reason", "global cancel")
        assert panic.returncode == 0, panic.stdout + panic.stderr
        eventually(
            lambda: _status(tmp_path, order["order_ref"]) == "cancelled",
            timeout=15,
            what="intent cancelled",
        )
        status = cli("status", "--config", str(cfg), "--json")
        assert '"open_intents": 0' in status.stdout, status.stdout
        assert proc.poll() is None
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    # stopped: everything the main loop queued is written. Its 202 is on the intent (the
    # cause), and neither a reject event nor the reject streak's alert count came of it
    intent = _read(tmp_path, get_intent, order["order_ref"])
    assert "202: Order Canceled - reason: Cancelled by global cancel" in intent["last_error"]
    assert _events(tmp_path, "order_reject") == []
    assert _read(tmp_path, reject_streak) == 0
    assert_books_balance(admin, data(tmp_path))


@pytest.mark.parametrize("gateway_config", [CLIPS])  # replaces the fixture
def test_fills_while_the_database_is_locked_are_stored_once_without_a_restart(
    gateway, admin, tmp_path
):
    cfg = write_config(tmp_path, gateway.port, quote_max_age_s=STILL)
    proc = start("run", cfg)
    locker = None
    try:
        eventually(lambda: _execs(admin), timeout=30, what="first clip filled")
        [order] = _orders(admin, 1)
        [resting] = admin.call("state")["open_orders"]
        pid = heartbeat(data(tmp_path) / "heartbeat-main.json").pid
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(data(tmp_path) / "trading.sqlite3")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert locker.stdout is not None and locker.stdin is not None
        assert locker.stdout.readline().strip() == "locked"
        below = resting["lmt_price"] * 0.99
        for _ in range(3):  # each market move fills one clip of 5
            admin.call("set_price", symbol="MSFT", price=below)
        assert len(_execs(admin)) == 4 and _orders(admin, 1)[0]["status"] == "Filled"
        locker.stdin.write("release\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "released"
        assert locker.wait(10) == 0
        assert_books_balance(admin, data(tmp_path))  # every fill stored, each exactly once
        eventually(
            lambda: _status(tmp_path, order["order_ref"]) == "filled",
            timeout=10,
            what="intent filled",
        )
        assert proc.poll() is None
        assert heartbeat(data(tmp_path) / "heartbeat-main.json").pid == pid  # no restart
    finally:
        if locker is not None and locker.poll() is None:
            locker.kill()
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path))


def test_resting_orders_count_in_the_gates_position_limit(gateway, admin, connect, tmp_path):
    """A person's resting buy of 100 MSFT (no intent of ours) counts as if filled: our 20
    more would breach the per-symbol limit, so the gate refuses them."""
    other = connect(OTHER)
    _rest_order(other, "person-tws", qty=100)
    eventually(lambda: admin.call("state")["open_orders"], timeout=5, what="order resting")
    cfg = write_config(
        tmp_path, gateway.port, max_position_notional=20_000.0, quote_max_age_s=STILL
    )
    proc = start("run", cfg)
    try:
        eventually(
            lambda: any(
                "MSFT position value after the order" in e["reason"]
                for e in _events(tmp_path, "gate_refusal")
            ),
            timeout=30,
            what="the gate refuses MSFT",
        )
        assert _orders(admin, 1) == []
        other.cancelOrder(other.openTrades()[0].order)
        eventually(lambda: _execs(admin), timeout=20, what="trading resumes once it is gone")
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path))


def _refusals(tmp_path: Path, after_id: int = 0) -> list[str]:
    return [e["reason"] for e in _events(tmp_path, "gate_refusal") if e["id"] > after_id]


def test_a_restart_keeps_the_gates_memory_until_a_person_reenables_the_throttle(
    gateway, admin, tmp_path
):
    """Daily order count, duplicate guard and the latched execution throttle survive a
    restart; re-enabling the throttle is a person's recorded command that the running daemon
    applies at its next cycle."""
    cfg = write_config(
        tmp_path,
        gateway.port,
        max_orders_per_day=1,
        max_executions_per_window=1,
        quote_max_age_s=STILL,
        max_daily_loss=1e9,  # closing the position by hand books a paper loss
    )
    first = start("run", cfg, "--max-cycles", "1")
    assert first.wait(60) == 0
    assert len(_orders(admin, 1)) == 1 and len(_execs(admin)) == 1
    eventually(lambda: _events(tmp_path, "execution_throttle"), timeout=5, what="latch stored")
    ok = cli(
        "breaker", "reset", "--config", str(cfg), "--by", "alice", "--reason", "drill", "--yes"
    )
    assert ok.returncode == 0, ok.stderr
    # someone closes the position by hand: the swarm wants the same order again
    admin.call("set_position", symbol="MSFT", quantity=0, avg_cost=0.0)
    proc = start("run", cfg)
    try:
        eventually(lambda: _refusals(tmp_path), timeout=30, what="the restarted gate refuses")
        [reasons] = _refusals(tmp_path)[:1]
        assert "order rate: 1 sent today (max 1)" in reasons
        assert "duplicate: BUY 20 MSFT" in reasons
        assert "repeated-execution throttle latched" in reasons
        ok = cli(
            "throttle", "reenable", "--config", str(cfg), "--by", "bob", "--reason", "reviewed"
        )
        assert ok.returncode == 0, ok.stderr
        [applied] = eventually(
            lambda: _events(tmp_path, "execution_throttle_applied"), timeout=15, what="applied"
        )
        later = eventually(
            lambda: _refusals(tmp_path, applied["id"]), timeout=15, what="a later refusal"
        )
        assert "order rate: 1 sent today (max 1)" in later[0]
        assert "throttle latched" not in later[0]
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert len(_orders(admin, 1)) == 1, "the restarted daemon forgot what it sent"
    [again] = _events(tmp_path, "execution_throttle_reenabled")
    assert "bob" in again["details"] and again["reason"] == "reviewed"
    assert_books_balance(admin, data(tmp_path), seeded={"MSFT": -20})


def test_a_cycle_with_more_orders_than_the_per_second_limit_paces_them_instead_of_refusing(
    gateway, admin, tmp_path
):
    instances = ("index_trend.json", "tech_aggressive.json", "finance_conservative.json")
    cfg = write_config(
        tmp_path,
        gateway.port,
        instances,
        max_orders_per_second=1,
        quote_max_age_s=STILL,
        cycle_interval_s=4.0,
        max_cycle_s=3.5,
    )
    proc = start("run", cfg, "--max-cycles", "1")
    assert proc.wait(90) == 0
    stop_watchdog(tmp_path)
    sent = _orders(admin, 1)
    assert len(sent) >= 2, sent
    reasons = [e["reason"] for e in _events(tmp_path, "gate_refusal")]
    assert not [r for r in reasons if "order rate" in r], reasons
    assert_books_balance(admin, data(tmp_path))
