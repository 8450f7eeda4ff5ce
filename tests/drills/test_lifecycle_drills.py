"""Drills: a second daemon, and a stop in the middle of a cycle.

Real processes against the paper gateway; faults from outside (a second process, SIGTERM);
the safe outcome, then the accounting invariant.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import time

import pytest
from anthropic_server import AnthropicStub, Reply, tool_answer
from invariant import assert_books_balance
from procs import cli, data, heartbeat, start, stop, stop_watchdog, write_config

from data_lake import open_readonly, query_safety_events
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.heartbeat import read_heartbeat
from runtime.pacing_log import PACING_LOG, HistoryLog


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


@pytest.fixture
def stub():
    s = AnthropicStub().start()
    yield s
    s.stop()


def _main_hb(tmp_path):
    return read_heartbeat(data(tmp_path) / "heartbeat-main.json")


def test_a_second_daemon_or_watchdog_is_refused_before_it_writes_anything(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port)
    first = start("run", cfg)
    try:
        eventually(
            lambda: (hb := _main_hb(tmp_path)) and hb.cycle >= 1 and hb.pid == first.pid,
            timeout=40,
            what="the first daemon cycling",
        )
        wd = eventually(
            lambda: (
                (h := read_heartbeat(data(tmp_path) / "heartbeat-watchdog.json"))
                and h.phase == "watching"
                and h
            ),
            timeout=30,
            what="its watchdog watching",
        )
        clients_before = sorted(admin.call("state")["clients"])

        second = cli("run", "--config", str(cfg), "--max-cycles", "1")
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr and "data_lake" not in second.stderr

        # same account, other data dir, other client ids: the account lock refuses it
        other_dir = write_config(tmp_path / "b", gateway.port, client_id=3, watchdog_client_id=993)
        third = cli("run", "--config", str(other_dir), "--max-cycles", "1")
        assert third.returncode == 2 and f"pid {first.pid}" in third.stderr
        assert "account" in third.stderr
        assert not (tmp_path / "b" / "data" / "trading.sqlite3").exists()
        assert not (tmp_path / "b" / "data" / "heartbeat-main.json").exists()

        # the same account spelled out, through "localhost", with other client ids: still the
        # same account behind the same gateway
        spelled = write_config(
            tmp_path / "c",
            gateway.port,
            account="DU1234567",
            host="localhost",
            client_id=2,
            watchdog_client_id=990,
        )
        fourth = cli("run", "--config", str(spelled), "--max-cycles", "1")
        assert fourth.returncode == 2 and "account" in fourth.stderr, fourth.stderr
        assert not (tmp_path / "c" / "data" / "trading.sqlite3").exists()
        # the same client id as the running daemon: refused before anything is written
        same_id = write_config(tmp_path / "d", gateway.port)
        fifth = cli("run", "--config", str(same_id), "--max-cycles", "1")
        assert fifth.returncode == 2 and "client id 1 is already in use" in fifth.stderr
        assert not (tmp_path / "d" / "data" / "trading.sqlite3").exists()

        extra_watchdog = cli("watchdog", "--config", str(cfg))
        assert extra_watchdog.returncode != 0 and f"pid {wd.pid}" in extra_watchdog.stderr

        assert (
            heartbeat(data(tmp_path) / "heartbeat-main.json").pid == first.pid
        )  # nobody else wrote the heartbeat
        # nobody else connected (the daemon's own sessions may be reconnecting under load)
        assert set(admin.call("state")["clients"]) <= set(clients_before)
    finally:
        code = stop(first)
        stop_watchdog(tmp_path)
    assert code == 0
    assert_books_balance(admin, data(tmp_path))


def _resting_msft(admin):
    """A signal for a MSFT buy inside the collar but below the market: it rests."""
    price = admin.call("state")["prices"]["MSFT"]
    return {
        "symbol": "MSFT",
        "action": "BUY",
        "sec_type": "STK",
        "order_type": "LMT",
        "limit_price": round(price * 0.97, 2),
        "quantity": 5,
        "confidence": 0.9,
        "win_probability": 0.6,
        "payoff_ratio": 1.5,
        "rationale": "drill",
    }


def test_sigterm_mid_cycle_sends_nothing_more_and_cancels_our_working_orders(
    gateway, admin, tmp_path, stub
):
    resting = _resting_msft(admin)
    again = {**resting, "symbol": "AAPL", "limit_price": 1.0}
    stub.script(
        "index_trend",
        Reply(body=tool_answer([resting])),
        Reply(body=tool_answer([again]), delay_s=30.0),  # cycle 2 hangs in its LLM call
    )
    cfg = write_config(
        tmp_path,
        gateway.port,
        provider="anthropic",
        max_retries=0,
        cycle_interval_s=4.0,
        max_cycle_s=3.5,
        deadline_s=3.0,
        call_timeout_s=3.0,
    )
    env = {"ANTHROPIC_API_KEY": "sk-ant-drill-0123456789", "ANTHROPIC_BASE_URL": stub.base_url}
    proc = start("run", cfg, env=env)
    try:
        eventually(
            lambda: any(
                o["order_ref"].startswith("cmd-c1-") and o["status"] == "Submitted"
                for o in admin.call("ledger")["orders"]
            ),
            timeout=40,
            what="cycle 1 left a working order",
        )
        eventually(
            lambda: len(stub.calls_for("index_trend")) >= 2,
            timeout=20,
            what="cycle 2 waiting on its LLM call",
        )
        orders_at_signal = len(admin.call("ledger")["orders"])
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=40)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stop_watchdog(tmp_path)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and " ERROR " not in out, out[-3000:]
    ledger = admin.call("ledger")["orders"]
    assert len(ledger) == orders_at_signal  # nothing sent after the signal
    assert [o["status"] for o in ledger] == ["Cancelled"]  # our working order was cancelled
    db = open_readonly(data(tmp_path))
    cycles = [r["status"] for r in db.query("SELECT status FROM cycles ORDER BY id")]
    assert cycles[:1] == ["ok"] and cycles[-1] == "interrupted"
    kinds = [r["kind"] for r in db.query("SELECT kind FROM safety_events")]
    assert "stop_cancel" in kinds
    assert_books_balance(admin, data(tmp_path))


def test_a_stop_during_a_pacing_warm_up_is_prompt_and_shown_in_status(gateway, admin, tmp_path):
    """A supervisor's restart lands while the warm-up waits on IB's historical-data budget
    (earlier processes spent it): the stop must not wait for the warm-up (up to a minute), or
    the supervisor kills the main loop after its stop timeout and the watchdog flattens."""
    cfg = write_config(tmp_path, gateway.port)
    stop_timeout = 20.0  # config/demo.toml's [loop] stop_timeout_s; supervisord waits as long
    d = data(tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    spent = time.monotonic() - 1.0  # 60 requests a second ago: the next slot in ~10 minutes
    HistoryLog(d / PACING_LOG, time.monotonic, time.time).save(
        [(spent, ("spent", i), "SPENT") for i in range(60)]
    )
    proc = start("run", cfg)
    try:
        hb = eventually(
            lambda: (
                h
                if (h := _main_hb(tmp_path)) and "historical-data pacing" in (h.waiting or "")
                else None
            ),
            timeout=30,
            what="the warm-up waiting on pacing, in the heartbeat status reads",
        )
        assert hb.phase == "warm-up" and "60 of 60 requests used" in (hb.waiting or "")
        shown = cli("status", "--config", str(cfg))
        assert "warm-up: waiting " in shown.stdout and "for historical-data pacing" in shown.stdout
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(stop_timeout)  # TimeoutExpired: the stop waited on the warm-up
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert code == 0
    assert _main_hb(tmp_path).phase == "stopped"
    assert CircuitBreaker(data(tmp_path)).status().state is BreakerState.ACTIVE
    cycles = open_readonly(data(tmp_path)).query("SELECT COUNT(*) AS n FROM cycles")
    assert next(iter(cycles))["n"] == 0  # stopped before any cycle began


def test_an_adopted_watchdog_ends_with_the_next_clean_stop(gateway, admin, tmp_path):
    cfg = write_config(tmp_path, gateway.port)
    left = start("watchdog", cfg)  # as a SIGKILLed main loop's child outlives it
    try:
        eventually(lambda: 999 in admin.call("state")["clients"], timeout=20, what="watchdog")
        proc = start("run", cfg)
        try:
            eventually(
                lambda: any(
                    e["kind"] == "watchdog_adopted"
                    for e in query_safety_events(open_readonly(data(tmp_path)))
                ),
                timeout=30,
                what="the main loop adopting the running watchdog",
            )
        finally:
            assert stop(proc) == 0
        assert left.wait(15) == 0  # stopped by the main loop's clean stop, cleanly
        assert heartbeat(data(tmp_path) / "heartbeat-watchdog.json").phase == "stopped"
    finally:
        stop(left)
    said = (proc.stdout.read() if proc.stdout else b"").decode()
    assert f"stood down: a watchdog is already running (pid {left.pid}): adopting it" in said


def test_a_stop_with_the_gateway_down_says_which_orders_may_still_be_working(
    gateway, admin, tmp_path, stub
):
    resting = _resting_msft(admin)
    stub.script("index_trend", Reply(body=tool_answer([resting])))
    cfg = write_config(tmp_path, gateway.port, provider="anthropic", max_retries=0)
    env = {"ANTHROPIC_API_KEY": "sk-ant-drill-0123456789", "ANTHROPIC_BASE_URL": stub.base_url}
    proc = start("run", cfg, env=env)
    try:
        eventually(
            lambda: [o for o in admin.call("ledger")["orders"] if o["status"] == "Submitted"],
            timeout=40,
            what="a working order of ours",
        )
        [order] = admin.call("ledger")["orders"]
        admin.call("restart_now", down_s=0.5, reauth=True)  # down until a person logs in
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stop_watchdog(tmp_path)
    assert proc.returncode == 0, out[-3000:]
    [event] = query_safety_events(open_readonly(data(tmp_path)), "stop_cancel")
    assert event["severity"] == "critical"
    assert "could not be cancelled and may still be working" in event["reason"]
    assert order["order_ref"] in event["reason"]
    admin.call("login")
    # the next start reconciles it with whatever the broker did meanwhile
    again = start("run", cfg, "--max-cycles", "1", env=env)
    assert again.wait(90) == 0
    stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path))


def test_check_refuses_what_run_refuses_with_the_same_messages(gateway, admin, tmp_path, connect):
    cfg = write_config(tmp_path, gateway.port)
    ok = cli("check", "--config", str(cfg))
    assert ok.returncode == 0 and "reachable, account ok" in ok.stdout, ok.stderr

    no_key = write_config(tmp_path / "nokey", gateway.port, provider="anthropic")
    env = {"ANTHROPIC_API_KEY": ""}
    refused = cli("check", "--config", str(no_key), env=env)
    run = cli("run", "--config", str(no_key), "--max-cycles", "1", env=env)
    assert refused.returncode == run.returncode == 2
    assert "need ANTHROPIC_API_KEY" in refused.stderr and "need ANTHROPIC_API_KEY" in run.stderr

    squatter = connect(999)  # someone else holds the watchdog's client id
    taken = cli("check", "--config", str(cfg))
    assert taken.returncode == 2 and "watchdog: client id 999 is already in use" in taken.stderr
    squatter.disconnect()

    down = write_config(tmp_path / "down", 1)  # nothing listens on port 1
    unreachable = cli("check", "--config", str(down))
    assert unreachable.returncode == 2 and "unreachable" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    assert not data(tmp_path).exists() and not data(tmp_path / "down").exists()  # no writes


def test_panic_with_the_gateway_down_halts_and_says_the_account_may_not_be_flat(tmp_path):
    cfg = write_config(tmp_path, 1, connect_timeout_s=1.0)  # nothing listens on port 1
    out = cli("panic", "--config", str(cfg), "--by", "carol", "--reason", "gateway dead")
    assert out.returncode == 1
    assert "may NOT be flat" in out.stdout and "Traceback" not in out.stdout + out.stderr
    status = CircuitBreaker(data(tmp_path)).status()
    assert status.state is BreakerState.HALTED and "carol" in status.reason
    events = query_safety_events(open_readonly(data(tmp_path)), "panic")
    assert events and "carol" in events[0]["reason"]
    # recorded as the panic command's, with who pulled it, and the cancel it could not send
    assert events[0]["source"] == "panic" and json.loads(events[0]["details"])["by"] == "carol"
    [unsent] = query_safety_events(open_readonly(data(tmp_path)), "global_cancel_failed")
    assert unsent["source"] == "panic" and "global cancel not sent" in unsent["reason"]
    # in an emergency nobody types --by: the OS user who pulled it is recorded
    anon = write_config(tmp_path / "anon", 1, connect_timeout_s=1.0)
    assert cli("panic", "--config", str(anon)).returncode == 1
    who = f"{getpass.getuser()} (OS user; no --by given)"
    assert who in CircuitBreaker(data(tmp_path / "anon")).status().reason


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play the operator who forgot sudo -u")
def test_a_cli_command_run_as_root_leaves_nothing_the_service_user_cannot_write(tmp_path):
    cfg = write_config(tmp_path, 1)
    service = data(tmp_path)
    service.mkdir()
    os.chown(service, 65534, 65534)  # the service user owns its data directory
    (service / "run.lock").touch()
    os.chown(service / "run.lock", 65534, 65534)
    out = cli("breaker", "trip", "--by", "root", "--reason", "before a check", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    owners = {p.name: p.stat().st_uid for p in service.rglob("*")}
    assert "trading.sqlite3" in owners and "breaker.json" in owners
    assert {n: u for n, u in owners.items() if u != 65534} == {}
    # a lock file left by root does not keep the service from locking
    (service / "watchdog.lock").touch()
    os.chmod(service / "watchdog.lock", 0o444)
    from runtime.instance_lock import LockHeld, acquire

    held = acquire(service / "watchdog.lock", "test")
    with pytest.raises(LockHeld):
        acquire(service / "watchdog.lock", "second")
    held.release()
