"""The inspection commands a trader reads: orders, safety-events, llm-usage, trades, with
their filters, in text and --json; and a person's breaker trip."""

from __future__ import annotations

import json

from procs import cli, data, write_config

from data_lake import (
    Store,
    insert_cycle,
    insert_intent,
    log_safety_event,
    log_trade,
    record_llm_calls,
)
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.heartbeat import WATCHDOG_HEARTBEAT, SystemClock, write_heartbeat


def _intent(ref: str, symbol: str, status: str) -> dict[str, object]:
    return {
        "order_ref": ref,
        "source": "commander",
        "symbol": symbol,
        "sec_type": "STK",
        "action": "BUY",
        "quantity": 5,
        "order_type": "LMT",
        "limit_price": 100.0,
        "tif": "DAY",
        "status": status,
    }


def _seed(tmp_path):
    cfg = write_config(tmp_path, 1)
    store = Store.open(data(tmp_path))
    store.call(insert_cycle, 1, timeout=5)
    store.call(insert_intent, _intent("cmd-c1-a", "MSFT", "filled"), timeout=5)
    store.call(insert_intent, _intent("cmd-c1-b", "AAPL", "cancelled"), timeout=5)
    store.post(
        log_trade,
        {
            "exec_id": "E1",
            "order_ref": "cmd-c1-a",
            "symbol": "MSFT",
            "sec_type": "STK",
            "side": "BOT",
            "shares": 5.0,
            "price": 100.0,
            "exec_time": "2026-11-20T15:00:00",
        },
    )
    store.post(log_safety_event, "gate", "gate_refusal", "quote stale", "warning")
    store.post(log_safety_event, "watchdog", "breaker_trip", "main frozen", "critical")
    store.post(
        record_llm_calls,
        [
            {
                "cycle_id": 1,
                "instance_id": "alpha",
                "provider": "anthropic",
                "model": "m",
                "status": "ok",
                "input_tokens": 1000,
                "output_tokens": 100,
                "cost_usd": 0.5,
            },
            {
                "cycle_id": 1,
                "instance_id": "beta",
                "provider": "anthropic",
                "model": "m",
                "status": "ok",
                "input_tokens": 500,
                "output_tokens": 50,
                "cost_usd": 0.25,
            },
        ],
    )
    assert store.close(10) == 0
    return cfg


def _json(*args, ok=(0,)):
    out = cli(*args, "--json")
    assert out.returncode in ok, out.stderr
    return json.loads(out.stdout)


def test_orders_safety_events_llm_usage_and_trades_filter_and_speak_json(tmp_path):
    cfg = str(_seed(tmp_path))
    assert [o["order_ref"] for o in _json("orders", "--config", cfg)] == ["cmd-c1-b", "cmd-c1-a"]
    assert [o["symbol"] for o in _json("orders", "--config", cfg, "--status", "filled")] == ["MSFT"]
    text = cli("orders", "--config", cfg, "--symbol", "AAPL").stdout
    assert "AAPL" in text and "cancelled" in text and "MSFT" not in text

    events = _json("safety-events", "--config", cfg, "--severity", "critical")
    assert [(e["kind"], e["reason"]) for e in events] == [("breaker_trip", "main frozen")]
    assert len(_json("safety-events", "--config", cfg, "--since", "1d")) == 2
    assert _json("safety-events", "--config", cfg, "--since", "2999-01-01") == []

    usage = _json("llm-usage", "--config", cfg)
    assert {(u["instance_id"], u["calls"], u["cost_usd"]) for u in usage} == {
        ("alpha", 1, 0.5),
        ("beta", 1, 0.25),
    }
    assert [
        u["instance_id"] for u in _json("llm-usage", "--config", cfg, "--instance", "beta")
    ] == ["beta"]
    assert "alpha" in cli("llm-usage", "--config", cfg).stdout

    assert [t["exec_id"] for t in _json("trades", "--config", cfg, "--since", "2026-11-20")] == [
        "E1"
    ]
    assert _json("trades", "--config", cfg, "--since", "2026-11-21") == []
    bad = cli("orders", "--config", cfg, "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_a_person_trips_the_breaker_with_a_name_and_a_reason(tmp_path):
    cfg = str(_seed(tmp_path))
    refused = cli("breaker", "trip", "--config", cfg)
    assert refused.returncode == 2 and "--by" in refused.stderr
    out = cli("breaker", "trip", "--by", "dana", "--reason", "news", "--config", cfg)
    assert out.returncode == 0 and "HALTED" in out.stdout
    # the change is said once (not again by the breaker's own log line on stderr)
    assert out.stdout.count("ACTIVE -> HALTED") == 1 and out.stderr == "", out.stderr
    status = CircuitBreaker(data(tmp_path)).status()
    assert (status.state, status.source) == (BreakerState.HALTED, "person")
    assert "dana" in status.reason
    shown = _json("breaker", "--config", cfg)
    assert (shown["state"], shown["source"]) == ("HALTED", "person") and "dana" in shown["reason"]
    assert (shown["actor"], shown["history"][0]["actor"]) == ("dana", "dana")  # as a reset
    assert shown["history"][0]["to_state"] == "HALTED"
    assert "by person (dana): tripped by dana: news" in cli("breaker", "--config", cfg).stdout
    reset = cli("breaker", "reset", "--by", "dana", "--reason", "ok", "--yes", "--config", cfg)
    assert reset.returncode == 0 and CircuitBreaker(data(tmp_path)).status().state is (
        BreakerState.ACTIVE
    )
    assert reset.stdout.count("HALTED -> ACTIVE") == 1 and reset.stderr == "", reset.stderr
    assert [h["to_state"] for h in _json("breaker", "--config", cfg)["history"]][:2] == [
        "ACTIVE",
        "HALTED",
    ]


def test_the_breakers_write_forms_answer_in_json_and_refuse_naming_the_missing_flag(tmp_path):
    cfg = str(_seed(tmp_path))
    no_reason = cli("breaker", "trip", "--by", "dana", "--config", cfg, "--json")
    assert no_reason.returncode == 2
    assert json.loads(no_reason.stdout) == {
        "error": "refused: a breaker trip needs a reason (--reason TEXT)"
    }
    assert "--by" not in no_reason.stderr and "--reason TEXT" in no_reason.stderr
    trip = ("breaker", "trip", "--by", "dana", "--reason", "news", "--state", "REDUCING")
    tripped = _json(*trip, "--config", cfg)
    assert tripped["action"] == "trip" and tripped["changed"] is True
    assert (tripped["source"], tripped["actor"]) == ("person", "dana")
    assert (tripped["previous_state"], tripped["state"], tripped["persisted"]) == (
        "ACTIVE",
        "REDUCING",
        True,
    )
    shown = _json("status", "--config", cfg, "--offline", ok=(0, 3))["breaker"]
    assert {k: tripped[k] for k in shown} == shown  # the same keys as status --json's breaker
    line = cli("status", "--config", cfg, "--offline").stdout.splitlines()[0]
    assert line.endswith("(person (dana): tripped by dana: news)"), line  # who, in its field
    again = _json(*trip, "--config", cfg)
    assert again["changed"] is False and again["generation"] == tripped["generation"]
    reset = _json("breaker", "reset", "--by", "dana", "--reason", "ok", "--yes", "--config", cfg)
    assert (reset["action"], reset["changed"], reset["previous_state"]) == (
        "reset",
        True,
        "REDUCING",
    )
    assert (reset["state"], reset["actor"], reset["reason"]) == ("ACTIVE", "dana", "ok")
    noop = _json("breaker", "reset", "--by", "dana", "--reason", "ok", "--yes", "--config", cfg)
    assert (noop["changed"], noop["state"]) == (False, "ACTIVE")


def test_the_throttle_and_intent_write_forms_answer_in_json(tmp_path):
    cfg = str(_seed(tmp_path))
    store = Store.open(data(tmp_path))
    store.call(insert_intent, _intent("cmd-c1-u", "NVDA", "unresolved"), timeout=5)
    store.call(log_safety_event, "gate", "execution_throttle", "50 fills", "critical", timeout=5)
    store.close(5)
    again = _json("throttle", "reenable", "--by", "erin", "--reason", "checked", "--config", cfg)
    assert again["action"] == "reenable" and again["latched"] is False
    assert {k: again["last_reenabled"][k] for k in ("by", "reason")} == {
        "by": "erin",
        "reason": "checked",
    }
    assert again["last_latched"]["reason"] == "50 fills" and "next cycle" in again["applies"]
    resolve = ("intent", "resolve", "cmd-c1-u", "--status", "cancelled", "--by", "erin")
    resolved = _json(*resolve, "--reason", "cancelled at the broker", "--config", cfg)
    assert resolved["resolved"] == {
        "order_ref": "cmd-c1-u",
        "status": "cancelled",
        "by": "erin",
        "reason": "cancelled at the broker",
    }
    assert resolved["action"] == "resolve" and resolved["unresolved"] == []
    twice = cli(*resolve, "--reason", "again", "--config", cfg, "--json")
    assert twice.returncode == 2
    assert json.loads(twice.stdout) == {"error": "refused: intent cmd-c1-u is not unresolved"}


def test_the_throttle_and_unresolved_intents_read_as_json(tmp_path):
    cfg = str(_seed(tmp_path))
    assert _json("throttle", "--config", cfg) == {
        "latched": False,
        "last_latched": None,
        "last_reenabled": None,
    }
    store = Store.open(data(tmp_path))
    store.call(insert_intent, _intent("cmd-c1-u", "NVDA", "unresolved"), timeout=5)
    store.call(log_safety_event, "gate", "execution_throttle", "50 fills", "critical", timeout=5)
    store.close(5)
    assert _json("throttle", "--config", cfg)["latched"] is True
    [row] = _json("intent", "--config", cfg)["unresolved"]
    assert (row["order_ref"], row["symbol"]) == ("cmd-c1-u", "NVDA")


def test_status_is_live_from_the_broker_and_says_why_not_when_the_gateway_is_frozen(
    gateway, admin, tmp_path
):
    cfg = write_config(tmp_path, gateway.port)
    Store.open(data(tmp_path)).close(5)  # a data directory where nothing has traded yet
    up = cli("status", "--config", str(cfg))
    assert up.returncode == 3, up.stderr  # the broker answers, but nothing of ours is alive
    assert "(live from the broker): net liq 1,000,000.00" in up.stdout
    admin.call("freeze", seconds=120)  # past both calls however slow the machine
    frozen = _json("status", "--config", str(cfg), ok=(3,))
    assert frozen["live"] == {
        "reachable": False,
        "error": "no answer from the gateway within 2s",
    }
    text = cli("status", "--config", str(cfg))
    assert text.returncode == 3
    assert "broker not reachable (no answer from the gateway" in text.stdout


def test_status_counts_the_watchdogs_polls_and_exits_3_when_nothing_is_alive(tmp_path):
    cfg = str(write_config(tmp_path, 1, heartbeat_timeout_s=60.0))
    Store.open(data(tmp_path)).close(5)
    nothing = cli("status", "--config", cfg, "--offline")
    assert nothing.returncode == 3, nothing.stderr
    assert "NOTHING ALIVE: neither the main loop nor the watchdog (exit 3)" in nothing.stdout
    assert cli("status", "--config", cfg, "--offline", "--json").returncode == 3
    # this test's own process plays a watchdog that polled the account just now
    clock, beat = SystemClock(), data(tmp_path) / WATCHDOG_HEARTBEAT
    now = clock.monotonic()
    write_heartbeat(beat, clock, 42, "polling", session="connected", account_poll_mono=now)
    watched = _json("status", "--config", cfg, "--offline")["watchdog"]
    assert watched["alive"] and (watched["polls"], watched["cycle"]) == (42, 42)
    text = cli("status", "--config", cfg, "--offline")
    assert text.returncode == 0 and "NOTHING ALIVE" not in text.stdout
    [line] = [line for line in text.stdout.splitlines() if line.startswith("watchdog ")]
    assert ", poll 42, " in line and "cycle" not in line
    write_heartbeat(beat, clock, 43, "stopped", session="connected", account_poll_mono=now)
    assert cli("status", "--config", cfg, "--offline").returncode == 3
    missing = write_config(tmp_path / "none", 1)  # a missing data dir stays exit 2
    assert cli("status", "--config", str(missing), "--offline").returncode == 2


def test_status_counts_refusals_that_differ_only_in_numbers_as_one(tmp_path):
    cfg = str(write_config(tmp_path, 1))
    store = Store.open(data(tmp_path))
    for reason in (
        "order value 5,123.4 exceeds the maximum 5,000",
        "quote stale",
        "order value 5,200.1 exceeds the maximum 5,000",
        "order value 6,001 exceeds the maximum 5,000",
    ):
        store.call(log_safety_event, "gate", "gate_refusal", reason, "warning", timeout=5)
    store.close(5)
    refusals = _json("status", "--config", cfg, "--offline", ok=(3,))["refusals_today"]
    assert refusals == [  # the latest text is the example
        {"reason": "order value 6,001 exceeds the maximum 5,000", "n": 3, "variants": 3},
        {"reason": "quote stale", "n": 1, "variants": 1},
    ]
    text = cli("status", "--config", cfg, "--offline").stdout
    assert (
        "refused today 3 x order value 6,001 exceeds the maximum 5,000  (an example of 3 "
        "variants differing only in numbers)" in text
    )
    assert "refused today 1 x quote stale\n" in text
