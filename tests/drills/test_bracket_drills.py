"""Drills: a position is protected at the broker between cycles and when we are all gone.

The real daemon and watchdog trade the paper gateway with `[commander] stop_loss_pct` set; each
drill injects its fault from outside (SIGKILL of every process of ours, a price move through the
stop, a frozen main loop the watchdog flattens, a broker refusal of the stop), asserts the safe
outcome, then the accounting invariant (which also refuses an orphan protective order).
"""

from __future__ import annotations

import functools
import io
import json
import os
import signal
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from invariant import assert_books_balance
from procs import data, start, stop, stop_watchdog, write_config

from data_lake import (
    DatabaseError,
    DataLakeMissing,
    get_intent,
    open_readonly,
    query_safety_events,
)
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.cli import main
from runtime.heartbeat import read_heartbeat

STILL = 3600.0  # prices move only when a drill moves them: quotes are old, not stale


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(tick_interval_s=0.0, account_push_interval_s=0.1)


def _read(tmp_path: Path, fn: Any, *args: Any) -> Any:
    try:
        return fn(open_readonly(data(tmp_path)), *args)
    except (DataLakeMissing, DatabaseError):
        return None


def _intent(tmp_path: Path, ref: str) -> dict[str, Any]:
    """The stored intent, or {} while it (or the database) is not there yet."""
    row = _read(tmp_path, get_intent, ref)
    return dict(row) if row else {}


def _events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    return _read(tmp_path, query_safety_events, kind) or []


def _execs_of(tmp_path: Path, ref: str) -> list[dict[str, Any]]:
    rows = _read(
        tmp_path,
        lambda db: list(db.query("SELECT * FROM executions WHERE order_ref = ?", [ref])),
    )
    return rows or []


def _broker_statuses(tmp_path: Path, ref: str) -> list[str]:
    """The broker's status of the order(s) with this ref, as the orders table holds it."""
    rows = _read(
        tmp_path, lambda db: list(db.query("SELECT status FROM orders WHERE order_ref = ?", [ref]))
    )
    return [r["status"] for r in rows or []]


def _cycles_done(tmp_path: Path) -> int:
    rows = _read(
        tmp_path, lambda db: list(db.query("SELECT id FROM cycles WHERE finished_at IS NOT NULL"))
    )
    return len(rows or [])


def _resting_stop(admin: Any) -> dict[str, Any] | None:
    """The first of our stops resting (untriggered) at the gateway, its parent filled."""
    return next(
        (
            o
            for o in admin.call("state")["open_orders"]
            if o["order_ref"].endswith("-sl") and o["status"] == "PreSubmitted"
        ),
        None,
    )


def test_a_stop_outlives_every_process_of_ours_is_reconciled_as_ours_and_fills_once(
    gateway, admin, tmp_path
):
    cfg = write_config(tmp_path, gateway.port, stop_loss_pct=0.02, quote_max_age_s=STILL)
    proc = start("run", cfg)
    try:
        stop_order = eventually(lambda: _resting_stop(admin), timeout=30, what="a stop rests")
        ref = stop_order["order_ref"]
        parent_ref = ref.removesuffix("-sl")
        eventually(lambda: (_intent(tmp_path, parent_ref) or {}).get("status") == "filled")
        stored = _intent(tmp_path, ref)
        assert stored is not None
        assert (stored["parent_ref"], stored["order_type"], stored["tif"]) == (
            parent_ref,
            "STP",
            "GTC",
        )
        assert stored["aux_price"] == stop_order["aux_price"]
        # every process of ours dies at once (the loop frozen first: it cannot respawn its child)
        watchdog = read_heartbeat(data(tmp_path) / "heartbeat-watchdog.json")
        assert watchdog is not None
        os.kill(proc.pid, signal.SIGSTOP)
        os.kill(watchdog.pid, signal.SIGKILL)
        proc.kill()
        proc.wait(10)
        assert ref in {o["order_ref"] for o in admin.call("state")["open_orders"]}
        done = _cycles_done(tmp_path)
        proc = start("run", cfg)
        eventually(lambda: _cycles_done(tmp_path) > done, timeout=30, what="a cycle after restart")
        foreign = [e for e in _events(tmp_path, "reconcile") if e["order_ref"] == ref]
        assert foreign == []  # recognised as ours, not flagged as an order without an intent
        assert _intent(tmp_path, ref)["status"] == "submitted"
        # the price falls through the stop: it fills, once, and is recorded once
        admin.call("set_price", symbol=stop_order["symbol"], price=stop_order["aux_price"] - 1.0)
        eventually(lambda: len(_execs_of(tmp_path, ref)) == 1, timeout=15, what="stop recorded")
        eventually(lambda: _intent(tmp_path, ref)["status"] == "filled", timeout=15)
        fills = [e for e in admin.call("ledger")["executions"] if e["order_ref"] == ref]
        assert len(fills) == 1 and fills[0]["shares"] == stop_order["quantity"]
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert len(_execs_of(tmp_path, ref)) == 1
    assert_books_balance(admin, data(tmp_path))


def test_the_watchdogs_flatten_leaves_no_orphan_protective_order(gateway, admin, tmp_path):
    cfg = write_config(
        tmp_path, gateway.port, stop_loss_pct=0.02, take_profit_pct=0.05, quote_max_age_s=STILL
    )
    proc = start("run", cfg)
    try:
        ref = eventually(lambda: _resting_stop(admin), timeout=30, what="rests")["order_ref"]
        eventually(lambda: (_intent(tmp_path, ref) or {}).get("status") == "submitted")
        eventually(lambda: _broker_statuses(tmp_path, ref) == ["PreSubmitted"], what="recorded")
        os.kill(proc.pid, signal.SIGSTOP)  # frozen main loop: the watchdog trips and flattens
        eventually(
            lambda: (s := admin.call("state"))["positions"] == [] and s["open_orders"] == [],
            timeout=30,
            what="flat with no order left at the gateway",
        )
        eventually(lambda: proc.poll() is not None, timeout=20, what="frozen main loop killed")
        # why, while no process of ours has heard the cancel: the stop's last recorded status,
        # and the watchdog's flatten after it
        stale = eventually(
            lambda: _last_known_working(cfg, ref), timeout=15, what="why names the flatten"
        )
        assert stale["text"].startswith("last known working at the broker (PreSubmitted, recorded")
        assert "; a flatten at " in stale["text"], stale
        assert "(the watchdog, breaker tripped: " in stale["text"], stale
        assert stale["text"].endswith(
            " cancelled every order since — the main loop has not confirmed it yet"
        )
        proc = start("run", cfg)  # HALTED: it only reconciles what happened while it was gone
        for child in (ref, ref.removesuffix("-sl") + "-tp"):
            eventually(
                functools.partial(lambda c: _intent(tmp_path, c)["status"] == "cancelled", child),
                timeout=30,
                what=f"{child} reconciled as cancelled",
            )
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path))
    # why: each child was cancelled by the watchdog's flatten, not by OCA, and the broker's
    # order reads as the restart's reconciliation found it, not as last heard before
    for child in (ref, ref.removesuffix("-sl") + "-tp"):
        story = _why(cfg, child)
        assert [o["status"] for o in story["orders"]] == ["Cancelled"], story["orders"]
        assert story["order_events"][-1]["status"] == "Cancelled"
        outcome = story["protective"]["outcome"]
        assert outcome["cause"] == "flatten", outcome
        assert outcome["text"].startswith("cancelled by a flatten: the watchdog at "), outcome
        assert "(breaker tripped: " in outcome["text"] and outcome["by"]["source"] == "watchdog"


def test_a_refused_stop_closes_its_parents_position_with_a_safety_event(gateway, admin, tmp_path):
    admin.call("reject_next", code=201, order_type="STP")
    cfg = write_config(
        tmp_path, gateway.port, stop_loss_pct=0.02, take_profit_pct=0.05, quote_max_age_s=STILL
    )
    proc = start("run", cfg)
    try:
        [rejected] = eventually(
            lambda: _events(tmp_path, "protection_rejected"), timeout=30, what="stop refused"
        )
        child = rejected["order_ref"]
        parent_ref = child.removesuffix("-sl")
        closes = eventually(
            lambda: [e for e in _events(tmp_path, "protection_close") if "sent as" in e["reason"]],
            timeout=20,
            what="the parent's position closed",
        )
        close_ref = closes[0]["order_ref"]
        eventually(lambda: _execs_of(tmp_path, close_ref), timeout=15, what="close filled")
        bought = sum(e["shares"] for e in _execs_of(tmp_path, parent_ref))
        assert bought > 0
        assert sum(e["shares"] for e in _execs_of(tmp_path, close_ref)) == bought
        assert _execs_of(tmp_path, close_ref)[0]["side"] == "SLD"
        assert _intent(tmp_path, child)["status"] == "rejected"
        eventually(lambda: _intent(tmp_path, parent_ref + "-tp")["status"] == "cancelled")
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path))
    # why: the stop names the broker's error, the take-profit its rejected sibling
    stop_story = _why(cfg, child)["protective"]
    assert stop_story["outcome"]["state"] == "rejected"
    assert stop_story["outcome"]["text"].startswith("rejected by the broker: error 201")
    assert stop_story["sibling"]["order_ref"] == parent_ref + "-tp"
    tp = _why(cfg, parent_ref + "-tp")["protective"]["outcome"]
    assert tp["cause"] == "sibling_rejected" and child in tp["text"]
    parent = _why(cfg, parent_ref)
    assert [(c["order_ref"], c["outcome"]["state"]) for c in parent["children"]] == [
        (child, "rejected"),
        (parent_ref + "-tp", "cancelled"),
    ]


def test_a_close_by_signal_cancels_the_stop_first_and_leaves_nothing_behind(
    gateway, admin, tmp_path
):
    cfg = write_config(tmp_path, gateway.port, stop_loss_pct=0.3, quote_max_age_s=STILL)
    proc = start("run", cfg)
    try:
        stop_order = eventually(lambda: _resting_stop(admin), timeout=30, what="a stop rests")
        ref, symbol = stop_order["order_ref"], stop_order["symbol"]
        eventually(lambda: (_intent(tmp_path, ref) or {}).get("status") == "submitted")
        entry = stop_order["aux_price"] / 0.7
        # below its 20-day average (the trend follower exits) but above the stop
        admin.call("set_price", symbol=symbol, price=round(entry * 0.85, 2))
        eventually(
            lambda: (_intent(tmp_path, ref) or {}).get("status") == "cancelled",
            timeout=30,
            what="the stop cancelled before the close",
        )
        eventually(
            lambda: not any(p["symbol"] == symbol for p in admin.call("state")["positions"]),
            timeout=30,
            what="the position closed by the signal",
        )
        assert _execs_of(tmp_path, ref) == []  # the stop never fired
        reasons = _read(
            tmp_path, lambda db: [r["reason"] for r in db.query("SELECT * FROM decisions")]
        )
        assert any(r.endswith("its protective orders are cancelled first") for r in reasons)
        closes = [
            e
            for e in admin.call("ledger")["executions"]
            if e["symbol"] == symbol and e["side"] == "SLD"
        ]
        assert len(closes) >= 1 and not any(e["order_ref"].endswith("-sl") for e in closes)
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path))
    # the cycles that sent the bracket and lifted its stop replay identically
    ok = _read(tmp_path, lambda db: [r["id"] for r in db.query("SELECT * FROM cycles")])
    ok = [c for c in ok if _read(tmp_path, _cycle_status, c) == "ok"]
    assert ok
    for cycle in ok:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["replay", str(cycle), "--config", str(cfg), "--json"])
        doc = json.loads(out.getvalue())
        assert code == 0 and doc["identical"], doc["differences"]


def _why(cfg: Path, ref: str) -> dict[str, Any]:
    """`why REF --json` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["why", ref, "--config", str(cfg), "--json"])
    assert code == 0, err.getvalue()
    story: dict[str, Any] = json.loads(out.getvalue())
    return story


def _last_known_working(cfg: Path, ref: str) -> dict[str, Any] | None:
    """The child's outcome once `why` says it was last known working, else None."""
    outcome: dict[str, Any] = _why(cfg, ref)["protective"]["outcome"]
    return outcome if outcome["state"] == "last_known_working" else None


def _cycle_status(db: Any, cycle: int) -> str:
    [row] = list(db.query("SELECT status FROM cycles WHERE id = ?", [cycle]))
    return str(row["status"])
