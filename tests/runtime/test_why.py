"""`why REF` tells the chain from a fill back to the market, and the views answer the common
questions: a real daemon run against the paper gateway, then the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
from procs import cli, data, start, stop, stop_watchdog, write_config

from data_lake import (
    DatabaseError,
    DataLakeMissing,
    get_intent,
    open_readonly,
    query_safety_events,
    query_trades,
)
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually


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
    # the IV rank on the templates' 0-100 scale, as the rationales say it; JSON keeps 0-1
    assert f"iv_rank {story['market']['iv_rank'] * 100:.1f}," in text
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


# --- protective children ---------------------------------------------------------------------
def _story(cfg, ref: str) -> dict[str, Any]:
    shown = cli("why", ref, "--config", str(cfg), "--json")
    assert shown.returncode == 0, shown.stderr
    story: dict[str, Any] = json.loads(shown.stdout)
    return story


def _text(cfg, ref: str) -> str:
    shown = cli("why", ref, "--config", str(cfg))
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def _intent(tmp_path, ref: str) -> dict[str, Any]:
    try:
        row = get_intent(open_readonly(data(tmp_path)), ref)
    except (DataLakeMissing, DatabaseError):
        return {}
    return dict(row) if row else {}


def test_why_tells_a_protective_childs_story_working_then_filled_and_cancelled_by_oca(
    gateway, admin, tmp_path
):
    cfg = write_config(tmp_path, gateway.port, stop_loss_pct=0.02, take_profit_pct=0.05)
    proc = start("run", cfg)
    try:
        stop_order = eventually(
            lambda: next(
                (
                    o
                    for o in admin.call("state")["open_orders"]
                    if o["order_ref"].endswith("-sl") and o["status"] == "PreSubmitted"
                ),
                None,
            ),
            timeout=30,
            what="a stop rests",
        )
        sl = stop_order["order_ref"]
        parent, tp = sl.removesuffix("-sl"), sl.removesuffix("-sl") + "-tp"
        eventually(lambda: _intent(tmp_path, parent).get("status") == "filled", timeout=15)
        eventually(lambda: _intent(tmp_path, sl).get("status") == "submitted", timeout=15)
        # the parent lists its children, both working
        story = _story(cfg, parent)
        assert [
            (c["order_ref"], c["order_type"], c["outcome"]["state"]) for c in story["children"]
        ] == [
            (sl, "STP", "working"),
            (tp, "LMT", "working"),
        ]
        # the stop: its type and trigger, its parent in short, its OCA sibling, working
        child = _story(cfg, sl)["protective"]
        assert (child["kind"], child["order_type"], child["price_kind"]) == (
            "stop-loss",
            "STP",
            "trigger",
        )
        assert child["price"] == stop_order["aux_price"] == _intent(tmp_path, sl)["aux_price"]
        assert child["parent"]["order_ref"] == parent and child["parent"]["status"] == "filled"
        assert child["parent"]["fills"]["shares"] == child["quantity"]
        assert child["parent"]["decision"]["reason"].startswith("accepted: Kelly")
        assert child["sibling"]["order_ref"] == tp and child["sibling"]["order_type"] == "LMT"
        assert child["outcome"]["state"] == "working"
        text = _text(cfg, sl)
        for needle in (
            f"protective {sl} (stop-loss STP SELL",
            f"trigger {stop_order['aux_price']:g}",
            "outcome: working at the broker (PreSubmitted)",
            f"parent {parent}: BUY",
            f"OCA sibling {tp} (take-profit LMT SELL",
            "commander decision",
        ):
            assert needle in text, (needle, text)
        # the price falls through the stop: it fills, and OCA cancels the take-profit
        admin.call("set_price", symbol=stop_order["symbol"], price=stop_order["aux_price"] - 1.0)
        eventually(lambda: _intent(tmp_path, sl).get("status") == "filled", timeout=15)
        eventually(lambda: _intent(tmp_path, tp).get("status") == "cancelled", timeout=15)
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    [fill] = [t for t in query_trades(open_readonly(data(tmp_path))) if t["order_ref"] == sl]
    by_exec = _story(cfg, fill["exec_id"])  # an execId finds the child too
    assert by_exec["order_ref"] == sl
    outcome = by_exec["protective"]["outcome"]
    assert outcome["state"] == "filled" and outcome["fill"]["exec_ids"] == [fill["exec_id"]]
    assert outcome["fill"]["shares"] == fill["shares"]
    tp_id = _intent(tmp_path, tp)["broker_order_id"]
    cancelled = _story(cfg, str(tp_id))["protective"]  # and so does its order id
    assert cancelled["order_ref"] == tp and cancelled["price_kind"] == "limit"
    assert cancelled["outcome"]["cause"] == "oca"
    assert cancelled["outcome"]["text"].startswith(f"cancelled by OCA: its sibling {sl} filled")
    assert f"outcome: cancelled by OCA: its sibling {sl} filled" in _text(cfg, tp)
    text = _text(cfg, parent)
    assert "protective children:" in text
    assert f"{sl} (stop-loss STP SELL" in text and f"filled: {fill['shares']:g} @" in text
    assert f"{tp} (take-profit LMT SELL" in text and "cancelled by OCA" in text


def test_why_a_child_of_a_refused_bracket_was_never_sent_and_why(gateway, tmp_path):
    # index_trend's own stop (60%) lies beyond the protective collar (50%): the gate refuses
    # the whole bracket, so neither the parent nor its children are ever stored or sent
    cfg = write_config(tmp_path, gateway.port, stop_loss_pct=0.02, take_profit_pct=0.05)
    path = tmp_path / "instances" / "index_trend.json"
    inst = json.loads(path.read_text())
    inst["parameters"]["stop_loss_pct"] = 0.6
    path.write_text(json.dumps(inst))
    proc = start("run", cfg, "--max-cycles", "1")
    out = proc.communicate(timeout=90)[0].decode()
    stop_watchdog(tmp_path)
    assert proc.returncode == 0, out[-3000:]
    [refusal] = query_safety_events(open_readonly(data(tmp_path)), "gate_refusal")
    parent = refusal["order_ref"]
    assert "protective collar 50.0%" in refusal["reason"]
    story = _story(cfg, parent + "-sl")
    assert story["order_ref"] == parent + "-sl" and story["intent"] is None
    child = story["protective"]
    assert child["order_type"] == "STP" and child["price"] > 0 and child["action"] == "SELL"
    outcome = child["outcome"]
    assert outcome["state"] == "never_sent"
    assert outcome["text"].startswith("never sent: its bracket was refused because stop SELL")
    [own] = outcome["own"]
    assert own.startswith(f"stop SELL {child['quantity']:g}: price {child['price']:g} is 60.0%")
    assert child["parent"]["status"] == "refused" and child["parent"]["refusal"]
    assert child["sibling"]["order_ref"] == parent + "-tp"
    assert child["sibling"]["state"] == "never_sent"
    text = _text(cfg, parent + "-sl")
    assert f"order {parent}-sl: a protective stop-loss of a bracket the gate refused" in text
    assert "outcome: never sent: its bracket was refused because stop SELL" in text
    assert "(protective collar 50.0%)" in text and f"parent {parent}: BUY" in text
    # the take-profit itself passed the bracket's checks: it names the stop's refusal
    tp = _story(cfg, parent + "-tp")["protective"]["outcome"]
    assert tp["state"] == "never_sent" and tp["own"] == [] and "stop SELL" in tp["text"]
    text = _text(cfg, parent)
    assert "protective children:" in text
    assert f"{parent}-sl (stop-loss STP SELL" in text and "never sent: its bracket" in text
    unknown = cli("why", "cmd-c9-nothing-sl", "--config", str(cfg))
    assert unknown.returncode == 2 and "no order, execution or order id" in unknown.stderr
