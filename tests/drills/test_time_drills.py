"""Drill: the wall clock stepped by minutes, back and then forward, under a running daemon.

The daemon and its watchdog are started with a `sitecustomize` (tests/drills/wallclock) that
shifts their wall clock (time.time, datetime.now) by what the test writes to a file; the
monotonic clock is untouched, as when NTP or a person steps the system clock. Cycles must go
on at their pace (no stop, no burst of missed ones), nothing trips, and the books balance.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from invariant import assert_books_balance
from procs import data, start, stop, stop_watchdog, write_config

from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.heartbeat import read_heartbeat

SHIM = Path(__file__).with_name("wallclock")


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def _cycle(tmp_path) -> int:
    hb = read_heartbeat(data(tmp_path) / "heartbeat-main.json")
    return hb.cycle if hb else -1


def _cycles_over(tmp_path, seconds: float) -> int:
    first = _cycle(tmp_path)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return _cycle(tmp_path) - first


def test_a_wall_clock_step_back_and_forward_neither_stops_cycles_nor_bursts_nor_trips(
    gateway, admin, tmp_path
):
    offset = tmp_path / "wall-offset"
    offset.write_text("0")
    cfg = write_config(tmp_path, gateway.port, cycle_interval_s=1.0, max_cycle_s=0.9)
    env = {"PYTHONPATH": str(SHIM), "WALLCLOCK_OFFSET_FILE": str(offset)}
    proc = start("run", cfg, env=env)
    breaker = CircuitBreaker(data(tmp_path))
    try:
        eventually(lambda: _cycle(tmp_path) >= 2, timeout=60, what="cycling")
        eventually(
            lambda: (
                (hb := read_heartbeat(data(tmp_path) / "heartbeat-watchdog.json"))
                and hb.phase == "watching"
            ),
            timeout=30,
            what="the watchdog watching",
        )
        offset.write_text("-1200")  # the wall clock jumps 20 minutes back
        back = _cycles_over(tmp_path, 6.0)
        assert proc.poll() is None and breaker.status().state is BreakerState.ACTIVE
        offset.write_text("600")  # and then 30 minutes forward
        forward = _cycles_over(tmp_path, 6.0)
        assert proc.poll() is None and breaker.status().state is BreakerState.ACTIVE
        # one cycle a second on the monotonic clock, whatever the wall clock did: neither a
        # stall after the backward step nor a burst of "missed" cycles after the forward one
        assert 3 <= back <= 8, back
        assert 3 <= forward <= 8, forward
    finally:
        code = stop(proc)
        stop_watchdog(tmp_path)
    assert code == 0
    assert breaker.status().state is BreakerState.ACTIVE
    assert_books_balance(admin, data(tmp_path))


def test_no_llm_call_when_every_instrument_is_closed(gateway, admin, tmp_path):
    """The daemon's wall clock is put on a Saturday (whenever the test runs): every cycle is
    recorded `skipped` with the reason, and the Anthropic API is never called."""
    import datetime as dt

    from anthropic_server import AnthropicStub

    from data_lake import open_readonly

    now = dt.datetime.now(dt.UTC)
    saturday = (now + dt.timedelta(days=(5 - now.weekday()) % 7 or 7)).replace(
        hour=17, minute=0, second=0, microsecond=0
    )
    offset = tmp_path / "wall-offset"
    offset.write_text(str((saturday - now).total_seconds()))
    stub = AnthropicStub().start()
    try:
        cfg = write_config(
            tmp_path, gateway.port, provider="anthropic", trade_outside_liquid_hours=False
        )
        env = {
            "PYTHONPATH": str(SHIM),
            "WALLCLOCK_OFFSET_FILE": str(offset),
            "ANTHROPIC_API_KEY": "sk-ant-closed-0123456789",
            "ANTHROPIC_BASE_URL": stub.base_url,
        }
        proc = start("run", cfg, "--max-cycles", "2", env=env)
        out = proc.communicate(timeout=120)[0].decode()
        stop_watchdog(tmp_path)
        assert proc.returncode == 0, out[-3000:]
        cycles = list(open_readonly(data(tmp_path)).query("SELECT status, error FROM cycles"))
        assert [(c["status"], c["error"]) for c in cycles] == [
            ("skipped", "every instrument is closed")
        ] * 2
        assert stub.requests == []  # no LLM spend when nothing can be traded
    finally:
        stub.stop()
