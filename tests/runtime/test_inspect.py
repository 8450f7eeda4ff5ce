"""`python -m runtime inspect`: Datasette serves the audit trail read-only, with the canned
queries for the common questions and links that open them as charts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

from procs import ROOT, cli, data, write_config

from data_lake import Store, insert_intent, log_safety_event, log_trade, open_readonly
from paper_gateway.testing import eventually


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def _seed(data_dir) -> None:
    store = Store.open(data_dir)
    store.call(
        insert_intent,
        {
            "order_ref": "cmd-c1-abc",
            "source": "commander",
            "symbol": "MSFT",
            "sec_type": "STK",
            "action": "BUY",
            "quantity": 5,
            "order_type": "MKT",
            "tif": "DAY",
        },
        timeout=5,
    )
    store.post(
        log_trade,
        {
            "exec_id": "E1",
            "order_ref": "cmd-c1-abc",
            "symbol": "MSFT",
            "sec_type": "STK",
            "side": "BOT",
            "shares": 5.0,
            "price": 415.0,
            "exec_time": "2026-11-20T15:00:00",
        },
    )
    store.post(log_safety_event, "gate", "gate_refusal", "quote stale (12.0s old > 10s)")
    assert store.close(10) == 0


def test_inspect_serves_the_database_read_only_with_the_canned_queries(tmp_path):
    cfg = write_config(tmp_path, 1)
    _seed(data(tmp_path))
    before = (data(tmp_path) / "trading.sqlite3").read_bytes()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "inspect", "--config", str(cfg), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _try(f"{base}/-/versions.json"), timeout=30, what="datasette up")
        home = _get(f"{base}/trading")
        for title in (
            "Trade story",
            "Daily realised PnL by instance and symbol",
            "LLM spend by instance and day",
            "Gate refusals by reason",
            "Breaker history",
            "Equity (net liquidation)",
        ):
            assert title in home, title
        story = json.loads(_get(f"{base}/trading/trade_story.json?_shape=array"))
        assert [(r["exec_id"], r["order_ref"]) for r in story] == [("E1", "cmd-c1-abc")]
        refusals = json.loads(_get(f"{base}/trading/refusals_by_reason.json?_shape=array"))
        assert refusals == [{"reason": "quote stale (12.0s old > 10s)", "refusals": 1}]
        chart = _get(f"{base}/trading/equity_over_time")
        assert "open as a chart" in chart and "g.mark=line" in chart
        plugins = json.loads(_get(f"{base}/-/plugins.json"))
        assert "datasette-vega" in {p["name"] for p in plugins}
        table = _get(f"{base}/trading/order_intents")
        assert "stored BEFORE it was sent" in table  # table descriptions from the metadata
        # read-only: a write through the SQL page is refused and the file is unchanged
        blocked = _try(f"{base}/trading.json?sql=DELETE+FROM+executions")
        assert not blocked or "error" in blocked.lower()
    finally:
        proc.terminate()
        proc.wait(10)
    assert list(open_readonly(data(tmp_path)).query("SELECT exec_id FROM executions")) == [
        {"exec_id": "E1"}
    ]
    assert (data(tmp_path) / "trading.sqlite3").read_bytes() == before


def test_inspect_on_a_missing_database_is_one_line(tmp_path):
    out = cli("inspect", "--config", str(write_config(tmp_path, 1)))
    assert out.returncode == 2 and "does not exist" in out.stderr


def _try(url: str) -> str | None:
    try:
        return _get(url)
    except OSError as exc:
        body = getattr(exc, "read", None)
        return body().decode() if callable(body) else None
