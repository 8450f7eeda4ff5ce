"""`why REF` tells the chain from a fill back to the market, and the views answer the common
questions: a real daemon run against the paper gateway, then the CLI."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest
from procs import cli, data, start, stop, stop_watchdog, write_config

from data_lake import (
    DatabaseError,
    DataLakeMissing,
    Store,
    get_intent,
    insert_intent,
    log_safety_event,
    open_readonly,
    query_safety_events,
    query_trades,
    record_order_event,
)
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.cli import main


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


def _main(*args: str) -> tuple[int, str]:
    """`python -m runtime ARGS` in this process (quicker than a new one): exit code, stdout."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue()


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
        # the decision behind the parent (and so the child) is told once, in full
        assert text.count("commander decision") == 1 and "Kelly fraction" in text, text
        # status (the broker's open orders) and orders (our intents) show the stop's trigger
        trigger = f"{stop_order['aux_price']:g}"
        code, out = _main("status", "--config", str(cfg), "--json")
        live = {o["order_ref"]: o for o in json.loads(out)["live"]["open_orders"]}
        assert code == 0 and live[sl]["aux_price"] == stop_order["aux_price"], live
        assert live[tp]["aux_price"] is None and live[tp]["limit_price"] > stop_order["aux_price"]
        code, out = _main("status", "--config", str(cfg))
        assert f"STP trigger {trigger} PreSubmitted (client" in out, out
        code, out = _main("orders", "--config", str(cfg), "--json")
        stored = {o["order_ref"]: o for o in json.loads(out)}
        assert (
            stored[sl]["aux_price"] == stop_order["aux_price"] and stored[tp]["aux_price"] is None
        )
        code, out = _main("orders", "--config", str(cfg))
        assert "trigger" in out.splitlines()[0]
        [row] = [line for line in out.splitlines() if line.endswith(sl)]
        assert f" {trigger} " in row, row
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
    # the stop's story tells its sibling's cancel the same way
    sibling = _story(cfg, sl)["protective"]["sibling"]
    assert (sibling["order_ref"], sibling["cause"]) == (tp, "oca"), sibling
    assert f": cancelled by OCA: its sibling {sl} filled (" in _text(cfg, sl)
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


def _bracket(store: Store, parent: str, perm: int, at: str, tp: bool = True) -> None:
    """A filled parent and its working children, as the daemon stores them (no processes)."""
    base = {"source": "commander", "symbol": "MSFT", "sec_type": "STK", "quantity": 20}
    store.call(
        insert_intent,
        {**base, "order_ref": parent, "action": "BUY", "order_type": "LMT"}
        | {"limit_price": 415.0, "tif": "DAY", "status": "filled", "filled": 20},
        at=at,
        timeout=5,
    )
    children = [("-sl", "STP", None, 406.69)] + ([("-tp", "LMT", 430.0, None)] if tp else [])
    for n, (suffix, kind, limit, aux) in enumerate(children):
        store.call(
            insert_intent,
            {**base, "order_ref": parent + suffix, "action": "SELL", "order_type": kind}
            | {"limit_price": limit, "aux_price": aux, "tif": "GTC", "status": "submitted"}
            | {"parent_ref": parent},
            at=at,
            timeout=5,
        )
        _status(store, parent + suffix, perm + n, "PreSubmitted", at)


def _status(store: Store, ref: str, perm: int, status: str, at: str) -> None:
    store.call(
        record_order_event,
        order_ref=ref,
        perm_id=perm,
        order_id=perm,
        client_id=1,
        status=status,
        filled=0.0,
        at=at,
        timeout=5,
    )


def test_why_says_who_cancelled_everything_after_the_last_status_we_recorded(tmp_path):
    """The main loop records the broker's word; when it is gone, a panic or the watchdog's
    flatten after its last record tells what became of a child it still calls working."""
    cfg = write_config(tmp_path, 1)
    store = Store.open(data(tmp_path))
    _bracket(store, "cmd-c1-x", 80, "2026-11-20T02:03:11.000001+00:00")
    # a plain order (no bracket) still working when its process died
    store.call(
        insert_intent,
        {"source": "commander", "symbol": "AMD", "sec_type": "STK", "quantity": 5}
        | {"order_ref": "cmd-c1-p", "action": "BUY", "order_type": "LMT", "limit_price": 140.0}
        | {"tif": "DAY", "status": "submitted"},
        at="2026-11-20T02:03:11.000001+00:00",
        timeout=5,
    )
    _status(store, "cmd-c1-p", 79, "Submitted", "2026-11-20T02:03:11.000001+00:00")
    store.call(
        log_safety_event,
        "panic",
        "panic",
        "panic by carol: drill",
        "critical",
        details={"by": "carol", "reason": "drill"},
        at="2026-11-20T02:04:02.000001+00:00",
        timeout=5,
    )
    # the take-profit's cancel was heard; the stop's was not (its process died first)
    _status(store, "cmd-c1-x-tp", 81, "Cancelled", "2026-11-20T02:04:03.000001+00:00")
    # later a stop that a panic run as the watchdog (its name before) could not cancel
    _bracket(store, "cmd-c2-y", 90, "2026-11-20T02:10:00.000001+00:00", tp=False)
    for source, kind, reason in (
        ("watchdog", "panic", "panic by bob: gateway dead"),
        ("panic", "global_cancel_failed", "panic: global cancel not sent (refused)"),
    ):
        store.call(
            log_safety_event, source, kind, reason, at="2026-11-20T02:11:00+00:00", timeout=5
        )
    assert store.close(10) == 0

    code, text = _main("why", "cmd-c1-x-sl", "--config", str(cfg))
    assert code == 0, text
    for needle in (
        "order cmd-c1-x-sl: SELL 20 MSFT STP trigger 406.69 (GTC)",
        "outcome: last known working at the broker (PreSubmitted, recorded 2026-11-20 "
        "02:03:11); a panic at 02:04:02 (the panic command, by carol: drill) cancelled every "
        "order since — the main loop has not confirmed it yet",
        "OCA sibling cmd-c1-x-tp (take-profit LMT SELL 20 limit 430): cancelled by a flatten: "
        "the panic command at 2026-11-20 02:04:02 (by carol: drill) cancelled every order and "
        "closed every position",
        "at the broker: order 80 (perm 80, client 1) PreSubmitted, filled 0, last reported "
        "2026-11-20T02:03:11",
    ):
        assert needle in text, (needle, text)
    code, out = _main("why", "cmd-c1-x-sl", "--config", str(cfg), "--json")
    outcome = json.loads(out)["protective"]["outcome"]
    assert outcome["state"] == "last_known_working" and outcome["broker_status"] == "PreSubmitted"
    assert (outcome["since"]["kind"], outcome["since"]["by"]) == ("panic", "carol")
    # a plain order stored as working tells the same, as its outcome
    code, text = _main("why", "cmd-c1-p", "--config", str(cfg))
    assert (
        "order cmd-c1-p: BUY 5 AMD LMT @ 140 (DAY), from commander\n  outcome: last known "
        "working at the broker (Submitted, recorded 2026-11-20 02:03:11); a panic at 02:04:02 "
        "(the panic command, by carol: drill) cancelled every order since — the main loop has "
        "not confirmed it yet\n"
    ) in text, text
    code, out = _main("why", "cmd-c1-x-tp", "--config", str(cfg), "--json")
    tp = json.loads(out)["protective"]["outcome"]
    assert tp["cause"] == "flatten" and tp["by"]["source"] == "panic", tp
    assert (
        "at the broker: order 81 (perm 81, client 1) Cancelled, filled 0\n"
        in _main("why", "cmd-c1-x-tp", "--config", str(cfg))[1]
    )

    code, text = _main("why", "cmd-c2-y-sl", "--config", str(cfg))
    assert (
        "outcome: last known working at the broker (PreSubmitted, recorded 2026-11-20 02:10:00); "
        "a panic at 02:11:00 (the panic command, by bob: gateway dead) tried to cancel every "
        "order, but its global cancel failed at 02:11:00 (panic: global cancel not sent "
        "(refused)): it may still be working — the main loop has not reported it since"
    ) in text, text
