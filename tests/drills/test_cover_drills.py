"""Drills: every position stays covered exactly by its stops, whatever happens to it.

The real daemon (an LLM stub scripts the swarm's signals) and the watchdog trade the paper
gateway with `[commander] stop_loss_pct` set. Each drill does from outside what a bracket alone
does not survive: an entry that fills only in part, a close by signal of part of a position, a
person who changes the position in another session, positions the daemon finds without a stop
when it starts (one already through its stop, one whose new stop the broker refuses). After
each, the accounting invariant holds with `covered=True`: every position covered exactly by
working stops of ours, none larger than what it guards.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from anthropic_server import AnthropicStub, Reply, tool_answer
from invariant import assert_books_balance
from procs import data, start, stop, stop_watchdog, write_config

from data_lake import DatabaseError, DataLakeMissing, open_readonly, query_safety_events
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.cli import main

STILL = 3600.0  # prices move only when a drill moves them: quotes are old, not stale
CLIPS = GatewayConfig(tick_interval_s=0.0, account_push_interval_s=0.1, partial_fill_above=4.0)
KEY = "sk-ant-drill-0123456789"


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(tick_interval_s=0.0, account_push_interval_s=0.1)


@pytest.fixture
def stub() -> Iterator[AnthropicStub]:
    s = AnthropicStub().start()
    yield s
    s.stop()


def _events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    try:
        return query_safety_events(open_readonly(data(tmp_path)), kind)
    except (DataLakeMissing, DatabaseError):
        return []


def _working(admin: Any, symbol: str, suffix: str) -> list[dict[str, Any]]:
    """Our working orders on `symbol` whose orderRef ends with `suffix`."""
    return [
        o
        for o in admin.call("state")["open_orders"]
        if o["symbol"] == symbol and o["order_ref"].endswith(suffix)
    ]


def _held(admin: Any, symbol: str) -> float:
    return float(
        sum(p["quantity"] for p in admin.call("state")["positions"] if p["symbol"] == symbol)
    )


def _signal(admin: Any, action: str, quantity: int, symbol: str = "MSFT") -> dict[str, Any]:
    """A marketable limit signal (it fills on arrival, in clips where the gateway clips)."""
    price = admin.call("state")["prices"][symbol]
    return {
        "symbol": symbol,
        "action": action,
        "sec_type": "STK",
        "order_type": "LMT",
        "limit_price": round(price * (1.01 if action == "BUY" else 0.99), 2),
        "quantity": quantity,
        "confidence": 0.9,
        "win_probability": 0.6,
        "payoff_ratio": 1.5,
        "rationale": "drill",
    }


def _config(tmp_path: Path, port: int, **overrides: Any) -> Path:
    values = {"stop_loss_pct": 0.02, **overrides}
    return write_config(
        tmp_path, port, provider="anthropic", max_retries=0, quote_max_age_s=STILL, **values
    )


def _run(tmp_path: Path, port: int, stub: AnthropicStub, **overrides: Any) -> Any:
    cfg = _config(tmp_path, port, **overrides)
    return start("run", cfg, env={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": stub.base_url})


def _why(ref: str, cfg: Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        main(["why", ref, "--config", str(cfg)])
    return out.getvalue()


def _replay(cycle: int, cfg: Path) -> tuple[int, dict[str, Any]]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["replay", str(cycle), "--config", str(cfg), "--json"])
    return code, json.loads(out.getvalue())


@pytest.mark.parametrize("gateway_config", [CLIPS])  # replaces the fixture
def test_a_partly_filled_entry_is_cut_and_its_filled_part_gets_its_stop(
    gateway, admin, tmp_path, stub
):
    stub.script("index_trend", Reply(body=tool_answer([_signal(admin, "BUY", 10)])), Reply(
        body=tool_answer([])
    ))  # fmt: skip
    # the next cycle is a minute away: the filled part is covered between cycles
    proc = _run(tmp_path, gateway.port, stub, cycle_interval_s=60.0, partial_fill_grace_s=0.5)
    try:
        [parent] = eventually(
            lambda: [
                o
                for o in admin.call("ledger")["orders"]
                if o["order_ref"].startswith("cmd-c1-") and not o["order_ref"].endswith("-sl")
            ],
            timeout=40,
            what="the entry sent",
        )
        eventually(
            lambda: any(
                o["order_ref"] != parent["order_ref"] + "-sl"
                for o in _working(admin, "MSFT", "-sl")  # one read of the gateway
            ),
            timeout=30,
            what="a stop of its own for the filled part",
        )
        [cover] = _working(admin, "MSFT", "-sl")
        orders = {o["order_ref"]: o for o in admin.call("ledger")["orders"]}
        entry = orders[parent["order_ref"]]
        assert entry["status"] == "Cancelled" and entry["filled"] == 4  # the remainder cut
        assert orders[parent["order_ref"] + "-sl"]["status"] == "Cancelled"  # its held child too
        assert cover["quantity"] == 4 and cover["action"] == "SELL"
        fill = next(
            e for e in admin.call("ledger")["executions"] if e["order_ref"] == parent["order_ref"]
        )
        assert cover["aux_price"] == math.floor(fill["price"] * 0.98 * 100 + 1e-9) / 100
        [partial] = eventually(lambda: _events(tmp_path, "protection_partial"), what="recorded")
        assert "filled 4 and still works for 6" in partial["reason"]
        assert partial["cycle_id"] is None  # between cycles, not at the next one
        eventually(
            lambda: any("sent as" in e["reason"] for e in _events(tmp_path, "protection_cover")),
            what="the cover recorded",
        )
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path), covered=True)


def test_a_partial_close_by_signal_leaves_the_rest_covered_at_the_same_stop(
    gateway, admin, tmp_path, stub
):
    buy = _signal(admin, "BUY", 10)
    stub.script("index_trend", Reply(body=tool_answer([buy])), Reply(body=tool_answer([])))
    proc = _run(tmp_path, gateway.port, stub)
    try:
        [stop_order] = eventually(
            lambda: [o for o in _working(admin, "MSFT", "-sl") if o["quantity"] == 10],
            timeout=40,
            what="the bracket's stop resting",
        )
        stub.script(
            "index_trend",
            Reply(body=tool_answer([_signal(admin, "SELL", 4)])),
            Reply(body=tool_answer([])),
        )
        eventually(lambda: _held(admin, "MSFT") == 6, timeout=30, what="4 of 10 sold")
        [rest] = eventually(
            lambda: _working(admin, "MSFT", "-sl"), timeout=15, what="the rest covered"
        )
        assert rest["order_ref"] != stop_order["order_ref"]
        assert (rest["quantity"], rest["aux_price"]) == (6, stop_order["aux_price"])
        fired = [e for e in admin.call("ledger")["executions"] if e["order_ref"].endswith("-sl")]
        assert fired == []
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path), covered=True)


def test_a_person_trading_the_position_elsewhere_never_leaves_a_stop_larger_than_it(
    gateway, admin, tmp_path, stub
):
    stub.script("index_trend", Reply(body=tool_answer([_signal(admin, "BUY", 10)])), Reply(
        body=tool_answer([])
    ))  # fmt: skip
    proc = _run(tmp_path, gateway.port, stub, take_profit_pct=0.05)
    try:
        [sl] = eventually(
            lambda: [o for o in _working(admin, "MSFT", "-sl") if o["quantity"] == 10],
            timeout=40,
            what="the bracket resting",
        )
        # the take-profit is the bracket's last child: it may reach the gateway a moment later
        [tp] = eventually(lambda: _working(admin, "MSFT", "-tp"), timeout=15, what="its tp")
        avg = next(p for p in admin.call("state")["positions"] if p["symbol"] == "MSFT")
        admin.call("set_position", symbol="MSFT", quantity=4, avg_cost=avg["avg_cost"])
        [cover] = eventually(
            lambda: [o for o in _working(admin, "MSFT", "-sl") if o["quantity"] == 4],
            timeout=30,
            what="the stop cut to the 4 left",
        )
        [cover_tp] = eventually(
            lambda: [o for o in _working(admin, "MSFT", "-tp") if o["quantity"] == 4],
            timeout=15,
            what="the take-profit cut to the 4 left (sent after its stop)",
        )
        assert (cover["aux_price"], cover_tp["lmt_price"], cover_tp["quantity"]) == (
            sl["aux_price"],
            tp["lmt_price"],
            4,
        )
        eventually(
            lambda: any(
                e["order_ref"] == sl["order_ref"] for e in _events(tmp_path, "protection_trim")
            ),
            what="the trim recorded",
        )
        # the person closes the rest: no stop may stay on a flat contract
        admin.call("set_position", symbol="MSFT", quantity=0, avg_cost=0.0)
        eventually(
            lambda: not _working(admin, "MSFT", "-sl") and not _working(admin, "MSFT", "-tp"),
            timeout=30,
            what="the protective orders of a flat contract cancelled",
        )
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(admin, data(tmp_path), seeded={"MSFT": -10}, covered=True)


def test_positions_found_without_a_stop_are_covered_or_closed_at_the_first_cycle(
    gateway, admin, tmp_path, stub
):
    prices = admin.call("state")["prices"]
    admin.call("set_position", symbol="NVDA", quantity=3, avg_cost=prices["NVDA"])
    # bought 5% higher: its stop (2% below cost) is above the market already
    admin.call("set_position", symbol="MSFT", quantity=5, avg_cost=prices["MSFT"] * 1.05)
    admin.call("set_position", symbol="AAPL", quantity=10, avg_cost=prices["AAPL"])
    admin.call("reject_next", code=201, order_type="STP")  # AAPL's stop goes first: refused
    proc = _run(tmp_path, gateway.port, stub)
    try:
        eventually(
            lambda: _held(admin, "MSFT") == 0 and _held(admin, "AAPL") == 0,
            timeout=40,
            what="MSFT (through its stop) and AAPL (its stop refused) closed",
        )
        [nvda] = eventually(lambda: _working(admin, "NVDA", "-sl"), timeout=20, what="NVDA")
        assert nvda["quantity"] == 3
        story = eventually(
            lambda: (
                text
                if "protection_cover" in (text := _why(nvda["order_ref"], tmp_path / "test.toml"))
                and "working at the broker (PreSubmitted" in text  # not "no broker status yet"
                else None
            ),
            what="why tells the cover's story, with the broker's status recorded",
        )
        assert "a standalone cover the daemon placed" in story
        assert "working at the broker (PreSubmitted; an untriggered stop)" in story
        assert nvda["aux_price"] == math.floor(prices["NVDA"] * 0.98 * 100 + 1e-9) / 100
        assert _held(admin, "NVDA") == 3
        [rejected] = eventually(lambda: _events(tmp_path, "protection_rejected"), what="event")
        assert rejected["order_ref"].endswith("-sl")
        closes = eventually(
            lambda: (
                " ".join(e["reason"] for e in _events(tmp_path, "protection_close"))
                if len(_events(tmp_path, "protection_close")) >= 2
                else None
            ),
            what="both closes recorded",
        )
        assert "is through its stop" in closes and "AAPL" in closes
    finally:
        stop(proc)
        stop_watchdog(tmp_path)
    assert_books_balance(
        admin, data(tmp_path), seeded={"NVDA": 3, "MSFT": 5, "AAPL": 10}, covered=True
    )
    # the first cycle's cover replays as it was; a wider stop would have covered MSFT instead
    # of closing it, and put the other stops lower
    code, doc = _replay(1, tmp_path / "test.toml")
    assert code == 0 and doc["identical"], doc["differences"]
    assert {s["key"] for s in doc["cover"]["recorded"]} == {"AAPL", "MSFT", "NVDA"}
    wider = _config(tmp_path / "wider", gateway.port, stop_loss_pct=0.05, dir=str(data(tmp_path)))
    code, doc = _replay(1, wider)
    moved = {d["where"]: d for d in doc["differences"] if d["kind"] == "cover"}
    assert code == 1 and set(moved) == {"cover AAPL", "cover MSFT", "cover NVDA"}
    assert moved["cover MSFT"]["recorded"] == "close SELL 5"
    assert moved["cover MSFT"]["replayed"].startswith("stop SELL 5 at ")
