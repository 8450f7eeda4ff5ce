"""The gate's check of a whole bracket, and the bracket path: every intent before the send."""

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest
from lake import intent, read

from data_lake import Contract, get_intent, open_readonly, query_safety_events
from runtime.config import RiskConfig, parse_config
from skills.brackets import (
    Bracket,
    Protection,
    bracket_reasons,
    is_protective_ref,
    place_bracket_with_guard,
    with_children,
)
from skills.execution_gate import (
    GateContext,
    GateState,
    Holding,
    OrderRequest,
    Quote,
    order_ref_for,
)

ROOT = Path(__file__).resolve().parents[2]
LIMITS: RiskConfig = parse_config(tomllib.loads((ROOT / "config/paper.toml").read_text())).risk
BOTH = Protection(stop_loss_pct=0.05, take_profit_pct=0.10)


def ctx(**kw) -> GateContext:
    base = dict(
        breaker="ACTIVE",
        connected=True,
        watchdog_alive=True,
        market_open=True,
        quote=Quote(99.95, 100.05, 0.5),
        holdings={},
        daily_pnl=0.0,
        now=1000.0,
    )
    return GateContext(**{**base, **kw})


def parent(symbol="NVDA", sec_type="STK", expiry="", strike=0.0, right="", **kw) -> OrderRequest:
    contract = Contract(symbol=symbol, sec_type=sec_type, expiry=expiry, strike=strike, right=right)
    base = dict(
        contract=contract,
        action="BUY",
        quantity=10,
        order_type="LMT",
        limit_price=100.0,
        cycle_id=1,
    )
    return OrderRequest(**{**base, **kw})


class BracketSubmitter:
    """A hand-written fake broker that records what it was asked to send."""

    def __init__(self, store=None, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, list[str]]] = []
        self.intents_at_send: list[dict[str, Any]] = []
        self.store, self.fail = store, fail

    def submit_bracket(self, parent_ref, parent, children):
        if self.fail:
            raise self.fail
        refs = [parent_ref, *(r for r, _ in children)]
        if self.store is not None:
            db = open_readonly(self.store.data_dir)
            self.intents_at_send = [get_intent(db, r) or {} for r in refs]
        self.sent.append((parent_ref, [r for r, _ in children]))
        return {r: 200 + i for i, r in enumerate(refs)}


def test_long_stock_bracket_has_a_gtc_stop_below_and_a_take_profit_above():
    b = with_children(parent(), 100.0, BOTH)
    stop, profit = b.children
    assert (stop.action, stop.order_type, stop.aux_price, stop.tif) == ("SELL", "STP", 95.0, "GTC")
    assert (profit.action, profit.order_type, profit.limit_price) == ("SELL", "LMT", 110.0)
    assert stop.quantity == profit.quantity == 10
    assert stop.parent_ref == profit.parent_ref == order_ref_for(b.parent)
    assert bracket_reasons(b, ctx(), LIMITS) == []


def test_short_option_gets_a_buy_stop_above_its_price():
    sell_put = parent(
        sec_type="OPT", expiry="20991217", strike=100.0, right="P", action="SELL", quantity=2,
        limit_price=3.0,
    )  # fmt: skip
    b = with_children(sell_put, 3.0, Protection(stop_loss_pct=0.4))
    [stop] = b.children
    assert (stop.action, stop.order_type, stop.aux_price, stop.key) == (
        "BUY", "STP", 4.2, sell_put.key,
    )  # fmt: skip
    assert bracket_reasons(b, ctx(quote=Quote(2.95, 3.05, 0.5, 100.0, -0.3, 100.0)), LIMITS) == []


def test_a_stop_inside_the_quoted_spread_is_refused_it_would_fire_as_the_entry_fills():
    # a put sold at 7.61 fills when the bid reaches it: the ask (its buy stop's trigger) is
    # then a spread (0.22) higher, 7.83, through a 2% stop at 7.77: a certain round trip
    sell_put = parent(
        sec_type="OPT", expiry="20991217", strike=160.0, right="P", action="SELL", quantity=1,
        limit_price=7.61,
    )  # fmt: skip
    quote = Quote(7.50, 7.72, 0.5, 100.0, -0.3, 170.0)
    tight = with_children(sell_put, 7.61, Protection(stop_loss_pct=0.02))
    assert tight.children[0].aux_price == 7.77
    [reason] = bracket_reasons(tight, ctx(quote=quote), LIMITS)
    assert reason.startswith("stop BUY 1: stop 7.77 is 0.16 from the entry 7.61, not beyond")
    assert "quoted spread 0.22 (bid 7.5, ask 7.72): it would trigger as soon as" in reason
    wider = with_children(sell_put, 7.61, Protection(stop_loss_pct=0.04))  # 7.92: 0.31 away
    assert bracket_reasons(wider, ctx(quote=quote), LIMITS) == []
    # a long stock with its stop exactly a spread below the entry: refused too (bid 99.95,
    # ask 100.05); a cent further it may go
    at_spread = _with(with_children(parent(), 100.0, BOTH), 0, aux_price=99.9)
    assert any(
        "not beyond the quoted spread 0.10" in r for r in bracket_reasons(at_spread, ctx(), LIMITS)
    )
    clear = _with(at_spread, 0, aux_price=99.89)
    assert bracket_reasons(clear, ctx(), LIMITS) == []


def _with(b: Bracket, i: int, **kw) -> Bracket:
    kids = list(b.children)
    kids[i] = dataclasses.replace(kids[i], **kw)
    return dataclasses.replace(b, children=tuple(kids))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (dict(action="BUY"), "must be on the opposite side of the parent (BUY)"),
        (dict(quantity=11), "quantity must equal the parent's 10"),
        (dict(aux_price=40.0), "is 60.0% from the parent's reference 100 (protective collar"),
        (dict(aux_price=101.0), "stop 101 is not on the losing side of the entry 100"),
        (dict(tif="DAY"), "must be GTC"),
        (dict(parent_ref="cmd-c9-other"), "is not the parent's orderRef"),
        (dict(aux_price=float("nan")), "needs a positive finite price"),
    ],
)
def test_gate_refuses_a_malformed_stop_with_its_reason(change, expected):
    b = _with(with_children(parent(), 100.0, BOTH), 0, **change)
    got = bracket_reasons(b, ctx(), LIMITS)
    assert any(expected in r for r in got), got


def test_gate_refuses_a_take_profit_on_the_losing_side_and_a_bracket_without_a_stop():
    b = with_children(parent(), 100.0, BOTH)
    assert any(
        "take-profit 90 is not on the winning side" in r
        for r in bracket_reasons(_with(b, 1, limit_price=90.0), ctx(), LIMITS)
    )
    no_stop = dataclasses.replace(b, children=b.children[1:])
    assert "bracket: must carry exactly one stop (STP), has 0" in bracket_reasons(
        no_stop, ctx(), LIMITS
    )


def test_children_may_never_exceed_the_position_the_parent_leaves():
    # a short 4 held; a BUY 10 parent leaves +6: a SELL 10 stop would flip it short
    held = {"NVDA": Holding(contract=Contract.stock("NVDA"), quantity=-4, mark=100.0)}
    got = bracket_reasons(with_children(parent(), 100.0, BOTH), ctx(holdings=held), LIMITS)
    assert any("only a position-opening" in r for r in got)
    assert any("must only reduce the position the parent leaves (6)" in r for r in got)


@pytest.mark.asyncio
async def test_accepted_bracket_stores_every_intent_before_the_send(store):
    sub = BracketSubmitter(store)
    b = with_children(parent(), 100.0, BOTH)
    verdict = await place_bracket_with_guard(b, ctx(), GateState(), LIMITS, store, sub)
    assert verdict.accepted, verdict.reasons
    pref = verdict.order_ref
    assert pref is not None
    assert verdict.children == (pref + "-sl", pref + "-tp")
    assert all(is_protective_ref(r) for r in verdict.children)
    assert [i["status"] for i in sub.intents_at_send] == ["pending"] * 3
    stop = intent(store, pref + "-sl")
    assert (stop["order_type"], stop["aux_price"], stop["parent_ref"], stop["tif"]) == (
        "STP", 95.0, pref, "GTC",
    )  # fmt: skip
    assert stop["status"] == "submitted" and stop["broker_order_id"] == 201


@pytest.mark.asyncio
async def test_refused_bracket_sends_nothing_and_records_every_reason(store):
    sub = BracketSubmitter()
    b = _with(with_children(parent(), 100.0, BOTH), 0, action="BUY", quantity=3)
    verdict = await place_bracket_with_guard(b, ctx(), GateState(), LIMITS, store, sub)
    assert not verdict.accepted and sub.sent == []
    assert len(verdict.reasons) >= 2
    [event] = read(store, query_safety_events, kind="gate_refusal")
    assert "opposite side" in event["reason"] and "quantity must equal" in event["reason"]
    assert read(store, get_intent, verdict.order_ref) is None


@pytest.mark.asyncio
async def test_a_parent_the_gate_refuses_takes_its_children_down_too(store):
    sub = BracketSubmitter()
    b = with_children(parent(symbol="GME"), 100.0, BOTH)
    verdict = await place_bracket_with_guard(b, ctx(), GateState(), LIMITS, store, sub)
    assert not verdict.accepted and sub.sent == []
    assert any("allow-list" in r for r in verdict.reasons)


@pytest.mark.asyncio
async def test_broker_failure_marks_the_whole_bracket_not_sent(store):
    sub = BracketSubmitter(fail=ConnectionError("Socket disconnect"))
    b = with_children(parent(), 100.0, BOTH)
    verdict = await place_bracket_with_guard(b, ctx(), GateState(), LIMITS, store, sub)
    assert not verdict.accepted and verdict.order_ref is not None
    for ref in (verdict.order_ref, verdict.order_ref + "-sl", verdict.order_ref + "-tp"):
        assert intent(store, ref)["status"] == "not_sent"


@pytest.mark.asyncio
async def test_children_count_in_the_order_rate_but_not_in_the_duplicate_guard(store):
    state = GateState()
    b = with_children(parent(), 100.0, BOTH)
    await place_bracket_with_guard(b, ctx(), state, LIMITS, store, BracketSubmitter())
    assert state.sent_today == 3
    assert list(state.recent) == [(b.parent.key, "BUY", 10)]


def test_a_restart_rebuilds_children_into_the_rate_windows_but_not_the_duplicate_guard():
    from skills.execution_gate import SentOrder

    sent = [
        SentOrder("NVDA", "BUY", 10, 5.0, "d"),
        SentOrder("NVDA", "SELL", 10, 5.0, "d", protective=True),
    ]
    state = GateState.rebuild(sent, [], latched=False, now=1000.0, day="d", limits=LIMITS)
    assert state.sent_today == 2 and len(state.sent) == 2
    assert list(state.recent) == [("NVDA", "BUY", 10)]
