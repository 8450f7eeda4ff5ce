"""Drill: IB Gateway's daily restart under a running daemon (real processes).

The daemon's wall clock is stepped through a `sitecustomize` (tests/drills/wallclock) so that
"now" lies before, inside and after the `[broker] daily_restart` window without waiting for
it; the gateway restarts by admin `restart_now`. Orders stop at the window (the cycle records
why, once; `status` shows it), the gateway drops every socket, and after the window trading
resumes only once the reconnected broker has proven that every subscription ticks again.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from invariant import assert_books_balance
from procs import cli, data, start, stop, stop_watchdog, write_config

from data_lake import open_readonly
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.heartbeat import Heartbeat, read_heartbeat

SHIM = Path(__file__).with_name("wallclock")


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def _query(tmp_path, sql, params=()):
    try:
        return list(open_readonly(data(tmp_path)).query(sql, list(params)))
    except Exception:
        return []


def _events(tmp_path, kind):
    return _query(
        tmp_path,
        "SELECT id, at, source, reason FROM safety_events WHERE kind = ? ORDER BY id",
        [kind],
    )


def _main(tmp_path) -> Heartbeat:
    hb = read_heartbeat(data(tmp_path) / "heartbeat-main.json")
    assert hb is not None
    return hb


def _cycle(tmp_path) -> int:
    hb = read_heartbeat(data(tmp_path) / "heartbeat-main.json")
    return hb.cycle if hb else -1


def test_orders_stop_in_the_restart_window_and_resume_only_after_data_is_proven(
    gateway, admin, tmp_path
):
    real_now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    restart = real_now + dt.timedelta(hours=3)  # a restart time far from the real clock
    at = f"{restart:%H:%M}"
    until = f"{restart + dt.timedelta(minutes=5):%H:%M}"
    offset = tmp_path / "wall-offset"

    def wall_at(moment: dt.datetime) -> None:  # the daemon's "now" becomes `moment`
        offset.write_text(str((moment - dt.datetime.now(dt.UTC)).total_seconds()))

    wall_at(restart - dt.timedelta(minutes=2))  # the daemon starts inside the window
    cfg = write_config(
        tmp_path,
        gateway.port,
        daily_restart=at,
        daily_restart_tz="UTC",
        restart_guard_min=5,
        fresh_data_timeout_s=5.0,
        reconnect_initial_s=0.2,
        reconnect_max_s=1.0,
    )
    env = {"PYTHONPATH": str(SHIM), "WALLCLOCK_OFFSET_FILE": str(offset)}
    reason = f"gateway restart window {at}±5 min UTC"
    waiting = f"waiting for gateway restart ({at}, until {until} UTC)"
    proc = start("run", cfg, env=env)
    try:
        eventually(
            lambda: any(reason in e["reason"] for e in _events(tmp_path, "trading_paused")),
            timeout=60,
            what="the window's pause recorded",
        )
        cycle = _cycle(tmp_path)
        eventually(lambda: _cycle(tmp_path) >= cycle + 2, timeout=30, what="cycles go on")
        skipped = _query(tmp_path, "SELECT status, error FROM cycles ORDER BY id")
        assert skipped and all(c["status"] == "skipped" for c in skipped), skipped
        assert reason in skipped[-1]["error"]
        assert len(_events(tmp_path, "trading_paused")) == 1  # recorded once, not per cycle
        assert admin.call("state")["executions"] == 0
        assert not _query(tmp_path, "SELECT 1 FROM order_intents")
        assert waiting in cli("status", "--config", str(cfg), "--offline").stdout

        admin.call("restart_now", down_s=5)  # the gateway restarts: every socket drops
        eventually(
            lambda: _main(tmp_path).session == "reconnecting", timeout=5, what="drop noticed"
        )
        wall_at(restart + dt.timedelta(minutes=6))  # the window is over, the broker is not back
        assert waiting in cli("status", "--config", str(cfg), "--offline").stdout
        eventually(
            lambda: admin.call("state")["executions"] >= 1,
            timeout=60,
            what="trading after the restart",
        )
        text = cli("status", "--config", str(cfg), "--offline").stdout
        assert waiting not in text and "broker session connected" in text
    finally:
        code = stop(proc)
        stop_watchdog(tmp_path)
    assert code == 0
    # nothing was sent before the reconnected broker had proven every subscription ticks
    [proven] = [e for e in _events(tmp_path, "market_data_proven") if e["source"] == "main_loop"]
    [resumed] = _events(tmp_path, "trading_resumed")
    assert resumed["id"] > proven["id"]  # after the window's pause (or a data pause after it)
    intents = _query(tmp_path, "SELECT created_at FROM order_intents ORDER BY id")
    assert intents and all(i["created_at"] > proven["at"] for i in intents)
    assert_books_balance(admin, data(tmp_path))
