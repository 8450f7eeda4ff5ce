"""The Prometheus endpoint: a real `python -m runtime metrics` process, scraped over HTTP, its
figures checked against the database they are read from."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from procs import ROOT, data, stop, write_config
from prometheus_client.parser import text_string_to_metric_families

from data_lake import (
    Store,
    finish_cycle,
    insert_cycle,
    insert_intent,
    log_account_snapshot,
    log_safety_event,
    log_trade,
    open_readonly,
    record_llm_calls,
)
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.heartbeat import MAIN_HEARTBEAT, SystemClock, write_heartbeat
from runtime.metrics import refusal_label


def _record(data_dir: Path) -> None:
    """What a few cycles leave behind, written through the data lake's own functions."""
    store = Store.open(data_dir, name="test")
    try:
        for cycle, status in ((1, "ok"), (2, "ok"), (3, "timeout"), (4, "skipped")):
            store.post(insert_cycle, cycle, 123)
            store.post(finish_cycle, cycle, status, n_orders=1)
        calls = [
            {"instance_id": "a", "provider": "anthropic", "model": "claude-sonnet-4-6",
             "status": "ok", "input_tokens": 1200, "output_tokens": 300,
             "cache_read_tokens": 5000, "cost_usd": 0.0123, "latency_ms": 850.0},
            {"instance_id": "b", "provider": "anthropic", "model": "claude-sonnet-4-6",
             "status": "error", "input_tokens": 100, "cost_usd": 0.001, "latency_ms": 150.0},
        ]  # fmt: skip
        store.post(record_llm_calls, calls)
        for n in (101, 250):
            store.post(
                log_safety_event, "gate", "gate_refusal",
                f"quantity {n} exceeds max_order_quantity 100", "warning",
            )  # fmt: skip
        store.post(log_safety_event, "gate", "gate_refusal", "symbol XYZ not allowed", "warning")
        for i, status in enumerate(("filled", "filled", "cancelled")):
            store.post(
                insert_intent,
                {"order_ref": f"cmd-c1-{i}", "source": "commander", "symbol": "MSFT",
                 "sec_type": "STK", "action": "BUY", "quantity": 10, "order_type": "LMT",
                 "tif": "DAY", "status": status},
            )  # fmt: skip
        for i in range(2):
            store.post(
                log_trade,
                {"exec_id": f"e{i}", "order_ref": f"cmd-c1-{i}", "symbol": "MSFT",
                 "sec_type": "STK", "side": "BOT", "shares": 10, "price": 420.0,
                 "exec_time": "2026-11-22T15:00:00+00:00"},
            )  # fmt: skip
        store.post(
            log_account_snapshot, "main", "DU1", {"NetLiquidation": 1e6, "DailyPnL": -1234.5}, []
        )
        assert store.flush(10)
        CircuitBreaker(data_dir, store).trip(BreakerState.HALTED, "watchdog", "drill")
        assert store.flush(10)
    finally:
        store.close(5.0)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_scraped_figures_match_the_database(tmp_path):
    cfg = write_config(tmp_path, 4002, heartbeat_timeout_s=3600.0)  # fresh whatever the load
    _record(data(tmp_path))
    write_heartbeat(data(tmp_path) / MAIN_HEARTBEAT, SystemClock(), cycle=4, phase="idle")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "metrics", "--config", str(cfg), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert match, line
        m = _scrape(match.group(0))
    finally:
        stop(proc)
    db = open_readonly(data(tmp_path))

    def one(sql: str) -> float:
        return float(next(iter(db.query(sql)))["v"])

    for row in db.query("SELECT status, COUNT(*) AS n FROM cycles GROUP BY status"):
        assert m[("ib_swarm_cycles_total", (("outcome", row["status"]),))] == row["n"]
    assert m[("ib_swarm_cycle_duration_seconds_count", ())] == 3  # skipped cycles excluded
    assert m[("ib_swarm_fills_total", ())] == one("SELECT COUNT(*) AS v FROM executions") == 2
    assert m[("ib_swarm_filled_quantity_total", ())] == 20
    filled = (("source", "commander"), ("status", "filled"))
    assert m[("ib_swarm_order_intents_total", filled)] == 2
    qty = (("reason", "quantity N exceeds max_order_quantity N"),)
    assert m[("ib_swarm_gate_refusals_total", qty)] == 2
    assert m[("ib_swarm_gate_refusals_total", (("reason", "symbol XYZ not allowed"),))] == 1
    model = "claude-sonnet-4-6"
    assert m[("ib_swarm_llm_cost_usd_total", (("model", model),))] == one(
        "SELECT SUM(cost_usd) AS v FROM llm_calls"
    )
    assert m[("ib_swarm_llm_tokens_total", (("kind", "input"), ("model", model)))] == 1300
    assert m[("ib_swarm_llm_tokens_total", (("kind", "cache_read"), ("model", model)))] == 5000
    assert m[("ib_swarm_llm_calls_total", (("model", model), ("status", "error")))] == 1
    assert m[("ib_swarm_llm_latency_seconds_sum", ())] == 1.0
    assert m[("ib_swarm_breaker_state", (("state", "HALTED"),))] == 1
    assert m[("ib_swarm_breaker_state", (("state", "ACTIVE"),))] == 0
    assert m[("ib_swarm_account_daily_pnl_usd", ())] == -1234.5
    assert m[("ib_swarm_heartbeat_running", (("process", "main"),))] == 1
    assert m[("ib_swarm_heartbeat_age_seconds", (("process", "main"),))] >= 0
    assert ("ib_swarm_heartbeat_age_seconds", (("process", "watchdog"),)) not in m
    assert m[("ib_swarm_database_up", ())] == 1


def test_refusal_labels_are_bounded():
    assert refusal_label("notional 25,001.50 above 25000; price off") == "notional N above N"
