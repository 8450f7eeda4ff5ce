"""`why REF` tells the chain from a fill back to the market, and the views answer the common
questions: a real daemon run against the paper gateway, then the CLI."""

from __future__ import annotations

import json

import pytest
from procs import cli, data, start, stop_watchdog, write_config

from data_lake import open_readonly, query_safety_events, query_trades
from paper_gateway import GatewayConfig


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


@pytest.fixture
def traded(gateway, tmp_path):
    cfg = write_config(tmp_path, gateway.port)
    proc = start("run", cfg, "--max-cycles", "2")
    out = proc.communicate(timeout=90)[0].decode()
    stop_watchdog(tmp_path)
    assert proc.returncode == 0, out[-3000:]
    [trade] = query_trades(open_readonly(data(tmp_path)))
    return cfg, trade


def test_why_tells_the_chain_from_the_fill_back_to_the_signal_and_the_market(traded, tmp_path):
    cfg, trade = traded
    by_exec = cli("why", trade["exec_id"], "--config", str(cfg), "--json")
    assert by_exec.returncode == 0, by_exec.stderr
    story = json.loads(by_exec.stdout)
    assert story["order_ref"] == trade["order_ref"]
    assert [e["exec_id"] for e in story["executions"]] == [trade["exec_id"]]
    assert story["intent"]["status"] == "filled" and story["intent"]["decision_id"]
    assert story["verdict"]["accepted"] is True
    decision = story["decision"]
    assert decision["id"] == story["intent"]["decision_id"]
    assert decision["sources"] == ["index_trend"] and decision["kelly_fraction"] > 0
    assert decision["inputs"]["confidence"] > 0 and decision["inputs"]["net_liquidation"] > 0
    [signal] = story["signals"]
    assert signal["instance_id"] == "index_trend" and signal["symbol"] == "MSFT"
    assert signal["prompt_hash"] and signal["template_hash"] and signal["params_hash"]
    [instance] = story["instances"]
    assert instance["prompt_hash"] == signal["prompt_hash"] and instance["raw_excerpt"]
    assert story["market"]["symbol"] == "MSFT" and story["market"]["last"] > 0

    by_ref = cli("why", trade["order_ref"], "--config", str(cfg))
    assert by_ref.returncode == 0, by_ref.stderr
    text = by_ref.stdout
    for needle in (
        trade["exec_id"],
        "intent (stored before sending): filled",
        "gate: accepted",
        "commander decision",
        "Kelly fraction",
        "signal from index_trend",
        "market the swarm saw for MSFT",
    ):
        assert needle in text, (needle, text)
    by_order_id = cli("why", str(trade["order_id"]), "--config", str(cfg), "--json")
    assert json.loads(by_order_id.stdout)["order_ref"] == trade["order_ref"]

    unknown = cli("why", "nope-123", "--config", str(cfg))
    assert unknown.returncode == 2 and "no order, execution or order id" in unknown.stderr


def test_the_views_answer_the_common_questions(traded, tmp_path):
    _, trade = traded
    db = open_readonly(data(tmp_path))
    [story] = list(db.query("SELECT * FROM trade_story"))
    assert story["exec_id"] == trade["exec_id"] and story["decision_reason"].startswith(
        "accepted: Kelly"
    )
    pnl = list(db.query("SELECT * FROM daily_pnl_by_instance_symbol"))
    assert [(r["instance"], r["symbol"], r["fills"]) for r in pnl] == [("index_trend", "MSFT", 1)]
    spend = list(db.query("SELECT * FROM llm_spend_by_instance_day"))
    assert {r["instance_id"] for r in spend} == {"index_trend"} and spend[0]["calls"] == 2
    assert list(db.query("SELECT * FROM refusals_by_reason")) is not None
    assert list(db.query("SELECT * FROM breaker_timeline")) == []


def test_why_tells_the_story_of_an_order_the_gate_refused(gateway, tmp_path):
    cfg = write_config(tmp_path, gateway.port, max_order_notional=100.0)
    proc = start("run", cfg, "--max-cycles", "1")
    out = proc.communicate(timeout=90)[0].decode()
    stop_watchdog(tmp_path)
    assert proc.returncode == 0, out[-3000:]
    db = open_readonly(data(tmp_path))
    [refusal] = query_safety_events(db, "gate_refusal")
    assert "exceeds the maximum 100" in refusal["reason"]
    shown = cli("why", refusal["order_ref"], "--config", str(cfg))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "MSFT" in text and "refused by the gate: never stored as an intent, never sent" in text
    assert "gate: refused (order value" in text and "exceeds the maximum 100" in text
    assert "commander decision" in text and "signal from index_trend" in text
    story = json.loads(cli("why", refusal["order_ref"], "--config", str(cfg), "--json").stdout)
    assert story["intent"] is None and story["verdict"]["accepted"] is False
    assert story["decision"]["symbol"] == "MSFT" and story["signals"]
