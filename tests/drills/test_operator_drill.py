"""`python -m runtime drill`: the kill drill an operator runs on their own paper setup."""

from __future__ import annotations

import pytest
from procs import cli, data, write_config

from paper_gateway import GatewayConfig


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def test_the_drill_trips_flattens_and_leaves_the_operators_data_dir_alone(gateway, admin, tmp_path):
    admin.call("set_position", symbol="JPM", quantity=10, avg_cost=212.0)  # theirs, closed too
    cfg = write_config(tmp_path, gateway.port)
    out = cli("drill", "--config", str(cfg), "--yes", "--symbol", "AAPL")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for line in (
        "person's order BUY 1 AAPL MKT: sent",
        "SIGKILL sent to the main loop with 2 positions open",
        "breaker HALTED",
        "the broker reports the account flat",
        "drill: PASSED",
    ):
        assert line in out.stdout, (line, out.stdout)
    assert admin.call("state")["positions"] == []
    assert not (data(tmp_path) / "breaker.json").exists()  # the operator's breaker untouched
    assert list((data(tmp_path) / "drills").glob("drill-*/breaker.json"))


def test_the_drill_refuses_live_and_asks_before_it_flattens(tmp_path):
    live = write_config(tmp_path / "live", 4002, mode="live")
    out = cli("drill", "--config", str(live), "--yes")
    assert out.returncode == 2 and "never on live" in out.stdout
    paper = write_config(tmp_path, 1)
    out = cli("drill", "--config", str(paper))
    assert out.returncode == 2 and "close EVERY position" in out.stdout and "--yes" in out.stdout
