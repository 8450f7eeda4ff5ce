"""End to end with real processes: the daemon and the watchdog against the paper gateway."""

import json
import os
import signal
import time

import pytest
from anthropic_server import AnthropicStub, Reply
from ib_client import NAME as IB_CLIENT_LIBRARY
from invariant import assert_books_balance
from procs import HB_TIMEOUT, POLL, cli, data, heartbeat, start, stop, stop_watchdog, write_config

from data_lake import open_readonly, query_safety_events, query_trades
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.heartbeat import read_heartbeat


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def test_full_cycle_from_market_data_to_a_recorded_fill(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port)
    proc = start("run", cfg, "--max-cycles", "2")
    out = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    assert f"broker main_loop ready on {IB_CLIENT_LIBRARY} " in out  # the configured library
    db = open_readonly(data(tmp_path))
    [trade] = query_trades(db)  # index_trend buys MSFT (trend up, IV rank low)
    assert (trade["symbol"], trade["side"], trade["shares"]) == ("MSFT", "BOT", 20)
    assert trade["order_ref"].startswith("cmd-c1-")
    assert admin.call("state")["positions"][0]["symbol"] == "MSFT"
    cycles = list(db.query("SELECT status FROM cycles ORDER BY id"))
    assert [c["status"] for c in cycles] == ["ok", "ok"]
    snap = json.loads(cli("snapshots", "--config", str(cfg), "--cycle", "1").stdout)
    assert snap["verdicts"][0]["accepted"] and snap["swarm"]["outcomes"][0]["prompt_hash"]
    assert "| MSFT |" in snap["swarm"]["outcomes"][0]["prompt"]
    assert heartbeat(data(tmp_path) / "heartbeat-main.json").phase == "stopped"
    eventually(
        lambda: heartbeat(data(tmp_path) / "heartbeat-watchdog.json").phase == "stopped",
        timeout=15,
        what="watchdog child stopped with the main loop",
    )
    trades = cli("trades", "--config", str(cfg)).stdout
    assert "BOT" in trades and "MSFT" in trades and trade["order_ref"] in trades
    status = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert status["breaker"]["state"] == "ACTIVE" and status["cycles"] == 2
    lines = cli("status", "--config", str(cfg)).stdout.splitlines()
    main_line = next(line for line in lines if line.startswith("main "))
    watchdog_line = next(line for line in lines if line.startswith("watchdog "))
    assert ", cycle 2, " in main_line  # the main loop counts cycles, the watchdog its polls
    assert ", poll " in watchdog_line and ", cycle " not in watchdog_line


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP])
def test_dead_or_frozen_main_loop_is_flattened_by_the_watchdog(gateway, admin, tmp_path, fault):
    admin.call("set_position", symbol="AAPL", quantity=50, avg_cost=228.0)
    admin.call("set_position", symbol="JPM", quantity=-30, avg_cost=212.0)
    cfg = write_config(tmp_path, gateway.port)
    proc = start("run", cfg)
    try:
        eventually(
            lambda: (
                (hb := read_heartbeat(data(tmp_path) / "heartbeat-main.json")) and hb.cycle >= 1
            ),
            timeout=30,
            what="main loop cycling",
        )
        eventually(lambda: 999 in admin.call("state")["clients"], timeout=10)
        t0 = time.monotonic()
        os.kill(proc.pid, fault)
        breaker = CircuitBreaker(data(tmp_path))
        limit = HB_TIMEOUT + POLL + 2.0
        eventually(
            lambda: breaker.status().state is BreakerState.HALTED,
            timeout=limit,
            what="breaker HALTED",
        )
        eventually(
            lambda: admin.call("state")["positions"] == [],
            timeout=limit - (time.monotonic() - t0),
            what="account flat",
        )
        assert "main loop process" in breaker.status().reason
        db = open_readonly(data(tmp_path))
        eventually(
            lambda: (
                {"breaker_trip", "flat_confirmed"} <= {e["kind"] for e in query_safety_events(db)}
            ),
            timeout=5,
            what="the watchdog confirmed flat from its own positions",
        )
        if fault == signal.SIGSTOP:  # the watchdog kills a frozen main loop
            eventually(lambda: proc.poll() is not None, timeout=5, what="frozen main killed")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop_watchdog(tmp_path)


def test_restarted_main_loop_stays_halted_until_a_person_resets(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port)
    CircuitBreaker(data(tmp_path)).trip(BreakerState.HALTED, "watchdog", "drill")
    proc = start("run", cfg, "--max-cycles", "1")
    assert proc.wait(60) == 0
    db = open_readonly(data(tmp_path))
    [cycle] = db.query("SELECT status, error FROM cycles")
    assert cycle["status"] == "skipped" and "HALTED" in cycle["error"]
    assert admin.call("state")["executions"] == 0
    refused = cli("breaker", "reset", "--config", str(cfg))
    assert refused.returncode == 2 and "needs the person's name" in refused.stderr
    ok = cli(
        "breaker", "reset", "--config", str(cfg), "--by", "alice", "--reason", "drill done", "--yes"
    )
    assert ok.returncode == 0 and "alice" in ok.stdout
    assert admin.call("ledger")["orders"] == []  # nothing reached the broker while HALTED
    proc = start("run", cfg, "--max-cycles", "1")
    assert proc.wait(60) == 0
    # trading resumed: the cycle's order reached the broker (it fills on the next tick, or
    # the clean stop cancels it if the machine is slow: either way it is accounted for)
    [order] = admin.call("ledger")["orders"]
    assert order["symbol"] == "MSFT" and order["status"] in ("Filled", "Cancelled")
    assert_books_balance(admin, data(tmp_path))
    shown = cli("breaker", "--config", str(cfg)).stdout
    assert "ACTIVE" in shown and "HALTED -> ACTIVE by person (alice)" in shown


def test_stale_watchdog_heartbeat_blocks_new_positions(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port, spawn=False)
    proc = start("run", cfg, "--max-cycles", "1")
    assert proc.wait(60) == 0
    assert admin.call("state")["executions"] == 0
    reasons = [
        e["reason"] for e in query_safety_events(open_readonly(data(tmp_path)), "gate_refusal")
    ]
    assert reasons and all("watchdog heartbeat stale" in r for r in reasons)


def test_sigterm_exits_cleanly_with_nothing_unrecorded(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port, cycle_interval_s=0.5, max_cycle_s=0.45)
    proc = start("run", cfg)
    eventually(
        lambda: admin.call("state")["executions"] >= 1 or proc.poll() is not None,
        timeout=30,
        what="a fill",
    )
    assert stop(proc) == 0
    db = open_readonly(data(tmp_path))
    pending = list(db.query("SELECT order_ref, status FROM order_intents WHERE status = 'pending'"))
    assert pending == []
    assert all(c["finished_at"] for c in db.query("SELECT finished_at FROM cycles"))
    assert heartbeat(data(tmp_path) / "heartbeat-main.json").phase == "stopped"
    eventually(
        lambda: heartbeat(data(tmp_path) / "heartbeat-watchdog.json").phase == "stopped",
        timeout=15,
    )


def test_watchdog_alone_trips_on_an_exposure_breach(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port, max_gross_exposure=100000.0)
    wd = start("watchdog", cfg)
    try:
        eventually(lambda: 999 in admin.call("state")["clients"], timeout=20)
        admin.call("set_position", symbol="AAPL", quantity=1000, avg_cost=228.0)
        breaker = CircuitBreaker(data(tmp_path))
        eventually(lambda: breaker.status().state is BreakerState.HALTED, timeout=10)
        assert "gross exposure" in breaker.status().reason
        eventually(lambda: admin.call("state")["positions"] == [], timeout=10, what="flat")
    finally:
        assert stop(wd) == 0


def test_panic_command_trips_cancels_and_flattens(gateway, admin, tmp_path, connect):
    cfg = write_config(tmp_path, gateway.port)
    admin.call("set_position", symbol="NVDA", quantity=10, avg_cost=180.0)
    from ib_client import LimitOrder, Stock

    ib = connect(1)
    c = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(c)
    ib.placeOrder(c, LimitOrder("BUY", 1, 100.0))
    eventually(lambda: admin.call("state")["open_orders"], timeout=5)
    result = cli("panic", "--config", str(cfg), "--by", "bob", "--reason", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "account flat" in result.stdout
    assert "attempt 1: close 10 NVDA: sent" in result.stdout  # progress, one line per position
    state = admin.call("state")
    assert state["positions"] == [] and state["open_orders"] == []
    status = CircuitBreaker(data(tmp_path)).status()
    assert (status.reason, status.actor) == ("panic by bob: test", "bob")
    # its closes are the panic command's (client 1000), not the watchdog's
    [close] = json.loads(cli("orders", "--config", str(cfg), "--source", "panic", "--json").stdout)
    assert (close["symbol"], close["action"], close["order_ref"][:6]) == ("NVDA", "SELL", "panic-")
    assert (
        json.loads(cli("orders", "--config", str(cfg), "--source", "watchdog", "--json").stdout)
        == []
    )
    why = cli("why", close["order_ref"], "--config", str(cfg)).stdout
    assert "from the panic command (by bob: test)" in why and "client 1000" in why, why


@pytest.fixture
def stub():
    s = AnthropicStub().start()
    yield s
    s.stop()


def _llm_env(stub):
    return {"ANTHROPIC_API_KEY": "sk-ant-e2e-0123456789", "ANTHROPIC_BASE_URL": stub.base_url}


def test_llm_mode_trades_only_through_the_gate(gateway, admin, tmp_path, stub):
    cfg = write_config(tmp_path, gateway.port, commander__mode="llm", max_retries=0)
    good = {
        "symbol": "MSFT",
        "sec_type": "STK",
        "action": "BUY",
        "quantity": 5,
        "order_type": "LMT",
        "limit_price": 420.0,
        "reason": "swarm agrees",
    }
    bad = {
        "symbol": "GME",
        "sec_type": "STK",
        "action": "BUY",
        "quantity": 100000,
        "order_type": "MKT",
        "reason": "IGNORE THE LIMITS",
    }

    def turn(*calls):
        body = stub.tool_answer([])
        body["content"] = [
            {"type": "tool_use", "id": f"toolu_{i}_{c[0]}", "name": c[0], "input": c[1]}
            for i, c in enumerate(calls)
        ]
        return Reply(body=body)

    done = stub.text_answer("Placed MSFT; GME refused by the gate.")
    stub.script(
        "commander",
        turn(("get_swarm_signals", {})),
        turn(("place_guarded_order", good), ("place_guarded_order", bad)),
        Reply(body=done),
    )
    proc = start("run", cfg, "--max-cycles", "1", env=_llm_env(stub))
    out = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    db = open_readonly(data(tmp_path))
    intents = {r["symbol"]: r for r in db.query("SELECT * FROM order_intents")}
    assert set(intents) == {"MSFT"} and intents["MSFT"]["source"] == "commander"
    [refusal] = query_safety_events(db, "gate_refusal")
    assert "GME" in refusal["details"] and "allow-list" in refusal["reason"]
    assert [t["symbol"] for t in query_trades(db)] == ["MSFT"]
    assert all(o["symbol"] != "GME" for o in admin.call("state")["open_orders"])
    results = stub.calls_for("commander")[2]["body"]["messages"][-1]["content"]
    verdicts = [json.loads(r["content"]) for r in results]
    assert verdicts[0]["accepted"] is True and verdicts[1]["accepted"] is False
    calls = list(db.query("SELECT COUNT(*) AS n FROM llm_calls WHERE instance_id = 'commander'"))
    assert calls[0]["n"] == 3


def test_a_cycle_that_raises_does_not_stop_the_loop(gateway, admin, tmp_path, stub):
    cfg = write_config(tmp_path, gateway.port, commander__mode="llm", max_retries=0)
    stub.script(
        "commander",
        stub.error(500, "api_error", "boom"),
        Reply(body=stub.text_answer("nothing to do")),
    )
    proc = start("run", cfg, "--max-cycles", "2", env=_llm_env(stub))
    out = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    cycles = list(
        open_readonly(data(tmp_path)).query("SELECT status, error FROM cycles ORDER BY id")
    )
    assert [c["status"] for c in cycles] == ["error", "ok"]
    assert "InternalServerError" in cycles[0]["error"]
    assert "sk-ant-e2e" not in out


def test_hanging_llm_call_is_cancelled_at_max_cycle_s_without_a_false_trip(
    gateway, admin, tmp_path, stub
):
    cfg = write_config(
        tmp_path, gateway.port, commander__mode="llm", max_retries=0, call_timeout_s=30.0
    )
    stub.script(
        "commander",
        Reply(body=stub.text_answer("late"), delay_s=10.0),
        Reply(body=stub.text_answer("nothing to do")),
    )
    proc = start("run", cfg, "--max-cycles", "2", env=_llm_env(stub))
    out = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    db = open_readonly(data(tmp_path))
    cycles = [c["status"] for c in db.query("SELECT status FROM cycles ORDER BY id")]
    assert cycles == ["timeout", "ok"]
    assert CircuitBreaker(data(tmp_path)).status().state is BreakerState.ACTIVE
    assert [e["kind"] for e in query_safety_events(db, "cycle_timeout")] == ["cycle_timeout"]


def test_dead_watchdog_is_restarted_by_the_main_loop(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port)
    proc = start("run", cfg)
    hb_path = data(tmp_path) / "heartbeat-watchdog.json"
    try:
        first = eventually(
            lambda: (hb := read_heartbeat(hb_path)) and hb.phase == "watching" and hb,
            timeout=30,
            what="watchdog up",
        )
        os.kill(first.pid, signal.SIGKILL)
        eventually(
            lambda: (
                (hb := read_heartbeat(hb_path)) and hb.pid != first.pid and hb.phase == "watching"
            ),
            timeout=30,
            what="a new watchdog",
        )
        events = query_safety_events(open_readonly(data(tmp_path)), "watchdog_exit")
        assert events and "restarting" in events[0]["reason"]
        assert proc.poll() is None
    finally:
        assert stop(proc) == 0
    eventually(lambda: heartbeat(hb_path).phase == "stopped", timeout=15)


def test_breaker_trip_cancels_in_flight_swarm_calls_promptly(gateway, admin, tmp_path, stub):
    cfg = write_config(
        tmp_path,
        gateway.port,
        provider="anthropic",
        max_retries=0,
        cycle_interval_s=20.0,
        max_cycle_s=19.0,
        deadline_s=18.0,
        call_timeout_s=18.0,
        heartbeat_interval_s=0.2,
    )
    stub.latency_s = 15.0
    proc = start("run", cfg, "--max-cycles", "1", env=_llm_env(stub))
    try:
        eventually(lambda: stub.requests, timeout=30, what="the swarm's call in flight")
        CircuitBreaker(data(tmp_path)).trip(BreakerState.HALTED, "watchdog", "drill")
        db = open_readonly(data(tmp_path))
        eventually(
            lambda: list(db.query("SELECT 1 FROM cycles WHERE finished_at IS NOT NULL")),
            timeout=10,
            what="cycle finished after the trip (the answer takes 15 s)",
        )
        [call] = db.query("SELECT status, error FROM llm_calls")
        assert call["status"] == "cancelled" and "breaker" in call["error"]
        assert admin.call("state")["open_orders"] == []
    finally:
        assert stop(proc) == 0


def test_watchdog_keeps_working_while_the_database_is_locked(gateway, admin, tmp_path):
    import sqlite3

    admin.call("set_position", symbol="AAPL", quantity=40, avg_cost=228.0)
    cfg = write_config(tmp_path, gateway.port)
    proc = start("run", cfg)
    hb_wd = data(tmp_path) / "heartbeat-watchdog.json"
    lock = None
    try:
        eventually(
            lambda: (hb := read_heartbeat(hb_wd)) and hb.phase == "watching",
            timeout=30,
            what="watchdog up",
        )
        eventually(
            lambda: (
                (hb := read_heartbeat(data(tmp_path) / "heartbeat-main.json")) and hb.cycle >= 1
            ),
            timeout=30,
            what="main cycling",
        )
        lock = sqlite3.connect(data(tmp_path) / "trading.sqlite3", isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock from now on
        os.kill(proc.pid, signal.SIGKILL)
        breaker = CircuitBreaker(data(tmp_path))
        eventually(
            lambda: breaker.status().state is BreakerState.HALTED,
            timeout=5,
            what="trip while the database is locked",
        )
        # no order without a stored intent: the position stays until the database frees up,
        # and the watchdog stays responsive meanwhile
        polls = heartbeat(hb_wd).cycle
        eventually(
            lambda: (
                heartbeat(hb_wd).cycle >= polls + 3 and heartbeat(hb_wd).age(time.monotonic()) < 3.0
            ),
            timeout=15,
            what="watchdog still polling while the database is locked",
        )
        assert admin.call("state")["positions"] != []
        lock.execute("ROLLBACK")
        eventually(
            lambda: admin.call("state")["positions"] == [],
            timeout=10,
            what="flat once the database is writable again",
        )
        history = list(open_readonly(data(tmp_path)).query("SELECT to_state FROM breaker_history"))
        assert [h["to_state"] for h in history] == ["HALTED"]  # recorded once it could be
    finally:
        if lock is not None:
            lock.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        stop_watchdog(tmp_path)


def test_watchdog_trips_on_the_daily_loss_limit(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port, max_daily_loss=5000.0)
    wd = start("watchdog", cfg)
    try:
        eventually(lambda: 999 in admin.call("state")["clients"], timeout=20)
        # a short position booked at zero proceeds: net liquidation falls by its value
        admin.call("set_position", symbol="AAPL", quantity=-100, avg_cost=228.0)
        breaker = CircuitBreaker(data(tmp_path))
        eventually(
            lambda: breaker.status().state is BreakerState.HALTED,
            timeout=10,
            what="daily loss trip",
        )
        assert breaker.status().reason.startswith("daily loss -22,")
        eventually(lambda: admin.call("state")["positions"] == [], timeout=10, what="flat")
    finally:
        assert stop(wd) == 0


def test_rejected_closing_order_is_retried_until_flat(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port, max_gross_exposure=100000.0, close_wait_s=0.5)
    wd = start("watchdog", cfg)
    try:
        eventually(lambda: 999 in admin.call("state")["clients"], timeout=20)
        admin.call("reject_next", code=201)  # the watchdog's first closing order bounces
        admin.call("set_position", symbol="MSFT", quantity=300, avg_cost=415.0)
        eventually(
            lambda: admin.call("state")["positions"] == [],
            timeout=15,
            what="flat after a rejected close",
        )
        db = open_readonly(data(tmp_path))
        eventually(
            lambda: "flat_confirmed" in [e["kind"] for e in query_safety_events(db)],
            timeout=5,
            what="the watchdog confirmed flat",
        )
        kinds = [e["kind"] for e in query_safety_events(db)]
        assert kinds.index("flatten_retry") < kinds.index("flat_confirmed")
        intents = list(
            db.query(
                "SELECT status, last_error FROM order_intents WHERE source = 'watchdog' ORDER BY id"
            )
        )
        assert [i["status"] for i in intents] == ["rejected", "filled"]
        assert intents[0]["last_error"].startswith("201:")
    finally:
        assert stop(wd) == 0


def test_consecutive_rejects_trip_the_breaker_and_stop_new_orders(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port, max_consecutive_rejects=1)
    admin.call("reject_next", code=201)  # the daemon's first order (BUY MSFT) is rejected
    proc = start("run", cfg, "--max-cycles", "2")
    out = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    status = CircuitBreaker(data(tmp_path)).status()
    assert status.state is BreakerState.HALTED and status.source == "broker"
    assert status.reason.startswith("1 consecutive order rejects (last: 201:")
    db = open_readonly(data(tmp_path))
    assert [c["status"] for c in db.query("SELECT status FROM cycles ORDER BY id")] == [
        "ok",
        "skipped",
    ]
    assert admin.call("state")["executions"] == 0
    stop_watchdog(tmp_path)
