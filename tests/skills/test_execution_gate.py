"""One test per pre-trade control, each asserting the reason; plus invariants (hypothesis)."""

import dataclasses
import sqlite3
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lake import intent, read

from data_lake import Contract, get_intent, open_readonly, query_safety_events
from runtime.config import RiskConfig, parse_config
from skills.execution_gate import (
    GateContext,
    GateState,
    Holding,
    OrderRequest,
    Quote,
    SentOrder,
    WorkingOrder,
    evaluate,
    is_flattener_ref,
    order_ref_for,
    place_order_with_guard,
)

ROOT = Path(__file__).resolve().parents[2]
LIMITS: RiskConfig = parse_config(tomllib.loads((ROOT / "config/paper.toml").read_text())).risk


class RecordingSubmitter:
    """A hand-written fake broker: records what it was asked to send."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, OrderRequest]] = []
        self.fail = fail

    def submit(self, order_ref, request):
        if self.fail:
            raise self.fail
        self.sent.append((order_ref, request))
        return 100 + len(self.sent)


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


def buy(
    qty=10, price=100.0, symbol="NVDA", sec_type="STK", expiry="", strike=0.0, right="", **kw
) -> OrderRequest:
    contract = Contract(symbol=symbol, sec_type=sec_type, expiry=expiry, strike=strike, right=right)
    return OrderRequest(
        **{
            **dict(
                contract=contract,
                action="BUY",
                quantity=qty,
                order_type="LMT",
                limit_price=price,
                cycle_id=1,
            ),
            **kw,
        }
    )


def reasons(request=None, context=None, state=None, limits=LIMITS):
    return evaluate(request or buy(), context or ctx(), state or GateState(), limits, "20261120")


def limits(**kw) -> RiskConfig:
    return LIMITS.model_copy(update=kw)


def test_clean_order_passes_every_check():
    assert reasons() == []


def test_refuses_when_breaker_halted():
    assert reasons(context=ctx(breaker="HALTED")) == ["breaker HALTED: no new orders"]


def test_breaker_reducing_allows_only_exposure_reducing_orders():
    held = {"NVDA": Holding(contract=Contract.stock("NVDA"), quantity=20, mark=100.0)}
    assert reasons(context=ctx(breaker="REDUCING", holdings=held)) == [
        "breaker REDUCING: only exposure-reducing orders"
    ]
    assert reasons(buy(action="SELL"), ctx(breaker="REDUCING", holdings=held)) == []


def test_halted_allows_only_the_watchdogs_closing_orders():
    held = {"NVDA": Holding(contract=Contract.stock("NVDA"), quantity=20, mark=100.0)}
    close = buy(action="SELL", qty=20, source="watchdog", order_type="MKT", limit_price=None)
    assert reasons(close, ctx(breaker="HALTED", holdings=held)) == []
    # the panic command's closes (the watchdog's code, their own source and orderRef prefix)
    panic = dataclasses.replace(close, source="panic")
    assert reasons(panic, ctx(breaker="HALTED", holdings=held)) == []
    assert order_ref_for(panic).startswith("panic-") and is_flattener_ref(order_ref_for(panic))
    assert is_flattener_ref(order_ref_for(close)) and not is_flattener_ref("cmd-c1-0123")
    assert (
        reasons(
            dataclasses.replace(close, source="commander"), ctx(breaker="HALTED", holdings=held)
        )[0]
        == "breaker HALTED: no new orders"
    )
    opening = dataclasses.replace(close, action="BUY")
    assert "breaker HALTED" in reasons(opening, ctx(breaker="HALTED", holdings=held))[0]


def test_refuses_while_disconnected():
    assert reasons(context=ctx(connected=False)) == [
        "broker not connected and reconciled: no orders"
    ]


def test_refuses_every_new_order_while_paused_but_not_the_watchdogs_closes():
    window = "gateway restart window 23:45±5 min"
    assert reasons(context=ctx(paused=(window,))) == [window]
    held = {"NVDA": Holding(contract=Contract.stock("NVDA"), quantity=20, mark=100.0)}
    reducing = buy(action="SELL")
    assert reasons(reducing, ctx(paused=(window,), holdings=held)) == [window]
    close = buy(action="SELL", qty=20, source="watchdog", order_type="MKT", limit_price=None)
    assert reasons(close, ctx(paused=(window,), holdings=held)) == []


def test_a_quote_from_before_the_last_reconnect_is_stale_whatever_its_age():
    fresh_looking = Quote(99.95, 100.05, 0.1, pre_outage=True)
    assert reasons(context=ctx(quote=fresh_looking)) == [
        "quote received before the last reconnect: stale until a fresh tick arrives"
    ]


def test_refuses_new_positions_while_watchdog_is_stale_but_allows_reducing():
    assert reasons(context=ctx(watchdog_alive=False)) == [
        "watchdog heartbeat stale: no new positions"
    ]
    held = {"NVDA": Holding(contract=Contract.stock("NVDA"), quantity=20, mark=100.0)}
    assert reasons(buy(action="SELL"), ctx(watchdog_alive=False, holdings=held)) == []


def test_refuses_outside_market_hours():
    assert reasons(context=ctx(market_open=False)) == [
        "market closed for this instrument (outside liquid hours)"
    ]


def test_refuses_symbol_not_on_allow_list():
    assert reasons(buy(symbol="GME")) == ["symbol 'GME' is not on the allow-list"]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (buy(qty=float("nan")), "quantity must be a positive whole number"),
        (buy(qty=-5), "quantity must be a positive whole number"),
        (buy(qty=2.5), "quantity must be a positive whole number"),
        (buy(price=float("inf")), "limit order needs a positive finite limit_price"),
        (buy(action="HOLD"), "action must be BUY or SELL"),
        (buy(order_type="STP"), "order_type must be LMT or MKT"),
        (buy(sec_type="OPT", expiry="soon"), "option order needs expiry YYYYMMDD"),
    ],
)
def test_refuses_malformed_orders(request_, expected):
    assert reasons(request_)[0].startswith(expected)


def test_refuses_without_a_quote_or_with_a_stale_one():
    assert reasons(context=ctx(quote=None)) == ["no quote: the price collar cannot be checked"]
    stale = reasons(context=ctx(quote=Quote(99.95, 100.05, 30.0)))
    assert stale == ["quote stale (30.0s old > 10s)"]
    crossed = reasons(context=ctx(quote=Quote(0.0, 100.05, 0.1)))[0]
    assert crossed.startswith("quote invalid")


def test_price_collar_refuses_limit_far_from_the_market():
    assert reasons(buy(price=120.0)) == ["limit 120 is 20.0% from the mid 100 (collar 5.0%)"]
    assert reasons(buy(price=104.0)) == []


def test_market_order_needs_a_tight_quote():
    mkt = buy(order_type="MKT", limit_price=None)
    assert reasons(mkt) == []
    wide = ctx(quote=Quote(90.0, 110.0, 0.1))
    assert reasons(mkt, wide)[0].startswith("market order refused: spread 20.0%")


def test_refuses_quantity_above_maximum():
    assert (
        reasons(
            buy(qty=101),
            state=GateState(),
            limits=limits(max_order_notional=1e9, max_position_notional=1e9),
        )[0]
        == "quantity 101 exceeds the maximum 100"
    )


def test_refuses_notional_above_maximum_with_option_multiplier():
    opt = buy(sec_type="OPT", expiry="20261218", strike=100.0, right="C", qty=30, price=10.0)
    q = ctx(quote=Quote(9.9, 10.1, 0.1, multiplier=100, delta=0.5, underlying_price=100))
    assert reasons(opt, q)[0] == "order value 30,000 exceeds the maximum 25,000 (multiplier 100)"


def test_refuses_per_symbol_position_above_limit():
    held = {"NVDA": Holding(contract=Contract.stock("NVDA"), quantity=450, mark=100.0)}
    assert reasons(buy(qty=100), ctx(holdings=held))[0] == (
        "NVDA position value after the order 55,000 exceeds 50,000"
    )


def test_refuses_gross_exposure_above_limit():
    held = {
        s: Holding(contract=Contract.stock(s), quantity=480, mark=100.0)
        for s in ("AMD", "TSLA", "AAPL", "MSFT")
    }
    assert reasons(buy(qty=10), ctx(holdings=held), limits=limits(max_portfolio_delta=1e9)) == []
    assert reasons(buy(qty=100), ctx(holdings=held))[0] == (
        "gross exposure after the order 202,000 exceeds 200,000"
    )


def test_refuses_portfolio_delta_above_limit():
    held = {"AMD": Holding(contract=Contract.stock("AMD"), quantity=950, mark=100.0)}
    got = reasons(buy(qty=60), ctx(holdings=held), limits=limits(max_gross_exposure=1e9))
    assert got == ["portfolio dollar delta after the order 101,000 exceeds ±100,000"]


def test_option_delta_counts_with_multiplier_and_underlying():
    held = {
        "X": Holding(
            contract=Contract.stock("AMD"),
            quantity=20,
            mark=5.0,
            multiplier=100,
            delta=-0.5,
            underlying_price=100.0,
        )
    }
    assert sum(h.dollar_delta for h in held.values()) == -100_000


def test_refuses_a_new_position_beyond_max_open_positions():
    held = {
        s: Holding(contract=Contract.stock(s), quantity=1, mark=10.0)
        for s in ("A", "B", "C", "D", "E", "F", "G", "H", "I", "J")
    }
    assert reasons(context=ctx(holdings=held)) == ["10 open positions: the maximum is 10"]


def test_refuses_new_exposure_after_daily_loss_limit():
    assert reasons(context=ctx(daily_pnl=-5000.0)) == [
        "daily loss -5,000 breaches the limit -5,000"
    ]


def test_order_rate_per_second_minute_and_day():
    state = GateState()
    state.record_sent(buy(symbol="AMD"), 999.5, "20261120")
    state.record_sent(buy(symbol="TSLA"), 999.8, "20261120")
    assert reasons(state=state) == ["order rate: 2 sent in the last second (max 2)"]
    state = GateState()
    for i in range(20):
        state.record_sent(buy(symbol="AMD", qty=i + 1), 950.0 + i, "20261120")
    assert reasons(state=state) == ["order rate: 20 sent in the last minute (max 20)"]
    state = GateState(day="20261120", sent_today=200)
    assert reasons(state=state) == ["order rate: 200 sent today (max 200)"]
    state = GateState(day="20261119", sent_today=200)  # yesterday's count does not apply
    assert reasons(state=state) == []


def test_repeated_execution_throttle_latches_until_a_person_reenables():
    state = GateState()
    small = limits(max_executions_per_window=3)
    assert [state.record_execution(t, small) for t in (1.0, 2.0, 3.0)] == [False, False, True]
    assert reasons(state=state, limits=small)[0].startswith("repeated-execution throttle latched")
    later = ctx(now=10_000.0)
    assert reasons(context=later, state=state, limits=small) != []  # time alone does not clear it
    state.reenable_executions()
    assert reasons(context=later, state=state, limits=small) == []


def test_duplicate_guard_refuses_same_contract_side_size_within_window():
    state = GateState()
    state.record_sent(buy(), 990.0, "20261120")
    assert reasons(state=state) == ["duplicate: BUY 10 NVDA was sent 10.0s ago (window 60s)"]
    assert reasons(context=ctx(now=1100.0), state=state) == []
    assert reasons(buy(qty=11), state=state) == []


def test_every_failing_reason_is_reported_not_just_the_first():
    got = reasons(buy(symbol="GME", price=500.0), ctx(breaker="HALTED", watchdog_alive=False))
    assert len(got) >= 4


def test_order_ref_is_deterministic_and_distinct():
    assert order_ref_for(buy()) == order_ref_for(buy())
    assert order_ref_for(buy()) != order_ref_for(buy(qty=11))
    assert order_ref_for(buy()).startswith("cmd-c1-")


# --- place_order_with_guard: records and submits ------------------------------------------
@pytest.mark.asyncio
async def test_accepted_order_stores_intent_before_submitting(store):
    seen_at_submit = []

    class CheckingSubmitter(RecordingSubmitter):
        def submit(self, order_ref, request):
            seen_at_submit.append(get_intent(open_readonly(store.data_dir), order_ref))
            return super().submit(order_ref, request)

    sub = CheckingSubmitter()
    verdict = await place_order_with_guard(
        buy(), ctx(), GateState(), LIMITS, store, sub, "20261120"
    )
    assert verdict.accepted and verdict.broker_order_id == 101
    assert (seen_at_submit[0] or {})["status"] == "pending"
    assert verdict.order_ref is not None
    assert intent(store, verdict.order_ref)["status"] == "submitted"


@pytest.mark.asyncio
async def test_refusal_is_a_stored_safety_event_with_every_reason(store):
    sub = RecordingSubmitter()
    verdict = await place_order_with_guard(
        buy(symbol="GME"), ctx(breaker="HALTED"), GateState(), LIMITS, store, sub
    )
    assert not verdict.accepted and sub.sent == []
    [event] = read(store, query_safety_events, kind="gate_refusal")
    assert "breaker HALTED" in event["reason"] and "allow-list" in event["reason"]
    assert read(store, get_intent, verdict.order_ref) is None


@pytest.mark.asyncio
async def test_same_intent_twice_is_refused_as_duplicate_order_ref(store):
    sub = RecordingSubmitter()
    await place_order_with_guard(buy(), ctx(), GateState(), LIMITS, store, sub)
    again = await place_order_with_guard(buy(), ctx(now=5000.0), GateState(), LIMITS, store, sub)
    assert not again.accepted and again.reasons[0].startswith("duplicate orderRef")
    assert len(sub.sent) == 1


@pytest.mark.asyncio
async def test_broker_failure_marks_intent_not_sent_and_is_not_retried(store):
    sub = RecordingSubmitter(fail=ConnectionError("Not connected"))
    verdict = await place_order_with_guard(buy(), ctx(), GateState(), LIMITS, store, sub)
    assert not verdict.accepted
    intent = read(store, get_intent, verdict.order_ref)
    assert intent is not None
    assert intent["status"] == "not_sent" and "Not connected" in intent["last_error"]


@pytest.mark.asyncio
async def test_no_order_without_a_stored_intent(store):
    other = sqlite3.connect(str(store.path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    sub = RecordingSubmitter()
    verdict = await place_order_with_guard(
        buy(), ctx(), GateState(), LIMITS, store, sub, intent_timeout_s=0.5
    )
    other.execute("ROLLBACK")
    assert not verdict.accepted and sub.sent == []
    assert "intent could not be stored" in verdict.reasons[0]
    assert read(store, get_intent, verdict.order_ref) is None


@pytest.mark.asyncio
async def test_a_send_is_counted_when_it_goes_out_not_when_the_view_was_built(store):
    clock = [1000.0]

    class SlowBroker(RecordingSubmitter):
        def submit(self, order_ref, request):
            clock[0] = 1000.8  # the intent write and the send took 0.8 s after the view
            return super().submit(order_ref, request)

    state = GateState()
    verdict = await place_order_with_guard(
        buy(), ctx(now=1000.0), state, LIMITS, store, SlowBroker(), clock=lambda: clock[0]
    )
    assert verdict.accepted and list(state.sent) == [1000.8]


# --- invariants ---------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    qty=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**9), 10**9)),
    price=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    symbol=st.sampled_from(["NVDA", "GME", "AAPL", ""]),
    action=st.sampled_from(["BUY", "SELL", "buy", "HOLD"]),
    breaker=st.sampled_from(["ACTIVE", "REDUCING", "HALTED", "???"]),
)
def test_gate_never_accepts_what_breaks_a_limit(qty, price, symbol, action, breaker):
    r = OrderRequest(
        contract=Contract.stock(symbol),
        action=action,
        quantity=qty,
        order_type="LMT",
        limit_price=price,
        cycle_id=1,
    )
    got = evaluate(r, ctx(breaker=breaker), GateState(), LIMITS, "d")
    if not got:
        assert breaker == "ACTIVE" and action == "BUY" and symbol in LIMITS.allowed_symbols
        assert 0 < qty <= LIMITS.max_order_quantity and qty == int(qty)
        assert price is not None and abs(price - 100.0) / 100.0 <= LIMITS.price_collar_pct
        assert qty * price <= LIMITS.max_order_notional


def test_refuses_a_contract_the_broker_could_not_qualify():
    assert reasons(context=ctx(qualified=False)) == [
        "contract NVDA could not be qualified at the broker (unknown or ambiguous)"
    ]


def test_duplicate_guard_memory_stays_bounded_over_a_long_run():
    state = GateState()
    for i in range(5000):
        state.record_sent(buy(qty=i + 1), float(i) * 100.0, "d")  # 100 s apart: old ones lapse
    assert len(state.recent) <= 1001
    assert reasons(buy(qty=5000), ctx(now=499_950.0), state) != []  # the latest is still known


# --- working orders, missing inputs, blocked contracts, memory across restarts ----------------
def sell(qty=10, price=100.0, **kw) -> OrderRequest:
    return buy(qty, price, action="SELL", **kw)


def held(qty: float, symbol: str = "NVDA") -> dict[str, Holding]:
    return {symbol: Holding(contract=Contract.stock(symbol), quantity=qty, mark=100.0)}


def resting(qty: float, key: str = "NVDA", price: float | None = 100.0) -> WorkingOrder:
    symbol, _, option = key.partition(" ")
    if option:  # "AMD 20261218 100C"
        expiry, strike_right = option.split()
        contract = Contract.option(symbol, expiry, float(strike_right[:-1]), strike_right[-1])
    else:
        contract = Contract.stock(symbol)
    return WorkingOrder(
        contract=contract, signed_quantity=qty, limit_price=price, order_ref=f"r{qty:g}"
    )


def test_two_reducing_orders_that_together_flip_the_position_are_not_reducing():
    # long 10, a SELL 10 already rests: another SELL 10 would flip to -10 if both fill
    context = ctx(breaker="REDUCING", holdings=held(10), working=(resting(-10),))
    assert reasons(sell(10), context) == ["breaker REDUCING: only exposure-reducing orders"]
    # without the resting order the same SELL is reducing
    assert reasons(sell(10), ctx(breaker="REDUCING", holdings=held(10))) == []


def test_resting_orders_count_as_filled_in_the_position_limit():
    small = limits(max_position_notional=3_000.0)
    assert reasons(buy(10), ctx(), limits=small) == []
    r = reasons(buy(10), ctx(working=(resting(25),)), limits=small)
    assert any("NVDA position value after the order 3,500" in x for x in r), r


def test_resting_orders_on_other_contracts_count_in_gross_exposure_and_open_positions():
    small = limits(max_gross_exposure=5_000.0, max_open_positions=1)
    context = ctx(working=(resting(45, "AMD"),))
    r = reasons(buy(10), context, limits=small)
    assert any("gross exposure after the order 5,500" in x for x in r), r
    assert any("1 open positions: the maximum is 1" in x for x in r), r


def test_resting_orders_count_in_the_portfolio_delta():
    small = limits(max_portfolio_delta=2_000.0)
    assert reasons(buy(10), ctx(), limits=small) == []
    r = reasons(buy(10), ctx(working=(resting(15, "AMD"),)), limits=small)
    assert any("portfolio dollar delta after the order 2,500" in x for x in r), r


def test_a_resting_order_without_a_price_on_a_contract_not_held_is_refused():
    r = reasons(buy(1), ctx(working=(resting(5, "AMD", price=None),)))
    assert r and "resting orders without a price" in r[0]


@given(
    position=st.integers(-50, 50).filter(lambda x: x != 0),
    rest=st.lists(st.integers(-50, 50).filter(lambda x: x != 0), max_size=4),
    orders=st.lists(st.integers(1, 50), min_size=1, max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_no_sequence_of_reducing_orders_plus_resting_orders_can_flip_a_position(
    position, rest, orders
):
    """Send reducing orders one by one (each accepted order rests); whatever subset of the
    resting orders then fills, the position never changes sign (beyond flat)."""
    working = [resting(float(q)) for q in rest]
    state = GateState()
    for i, qty in enumerate(orders):
        side = "SELL" if position > 0 else "BUY"
        request = buy(qty, action=side, cycle_id=i + 1)
        context = ctx(
            breaker="REDUCING",
            holdings=held(float(position)),
            working=tuple(working),
            now=1000.0 + 10 * i,
        )
        if not evaluate(request, context, state, limits(duplicate_window_s=0.0), "20261120"):
            state.record_sent(request, context.now, "20261120")
            working.append(resting(request.signed_quantity))
    new = working[len(rest) :]  # the orders this gate let through
    reducing_before = [w for w in working[: len(rest)] if (w.signed_quantity > 0) != (position > 0)]
    worst = position + sum(w.signed_quantity for w in new + reducing_before)
    assert worst == 0 or (worst > 0) == (position > 0) or not new


def test_refuses_without_daily_pnl_instead_of_assuming_zero():
    assert reasons(context=ctx(daily_pnl=None)) == [
        "daily PnL unknown (not reported by the broker): the daily loss limit cannot be checked"
    ]
    # reducing orders may still reduce
    assert reasons(sell(5), ctx(daily_pnl=None, holdings=held(10))) == []


def test_refuses_an_option_without_a_delta():
    option = buy(1, 5.0, sec_type="OPT", expiry="20261218", strike=100.0, right="C")
    quote = Quote(4.95, 5.05, 0.5, 100.0, None, 100.0)
    r = reasons(option, ctx(quote=quote))
    assert r == ["option NVDA 20261218 100C has no delta: the portfolio delta cannot be checked"]
    holding = {
        "AMD 20261218 100C": Holding(
            contract=Contract.stock("AMD"),
            quantity=1,
            mark=5.0,
            multiplier=100.0,
            delta=None,
            underlying_price=100.0,
        )
    }
    r = reasons(context=ctx(holdings=holding))
    assert r and r[0].startswith("holdings without a delta ['AMD 20261218 100C']")


def test_refuses_a_quote_without_a_receive_time():
    r = reasons(context=ctx(quote=Quote(99.95, 100.05, None)))
    assert r == ["quote has no receive time: its age cannot be checked"]


@pytest.mark.parametrize(
    "context, where",
    [
        (dict(quote=Quote(float("nan"), 100.05, 0.5)), "quote.bid=nan"),
        (dict(quote=Quote(99.95, 100.05, float("nan"))), "quote.age_s=nan"),
        (
            dict(
                holdings={
                    "AMD": Holding(contract=Contract.stock("AMD"), quantity=1, mark=float("nan"))
                }
            ),
            "holding AMD.mark=nan",
        ),
        (dict(daily_pnl=float("nan")), "daily_pnl=nan"),
        (dict(working=(resting(float("nan"), "AMD"),)), "working order"),
    ],
)
def test_refuses_on_a_nan_anywhere_with_its_own_reason(context, where):
    r = reasons(context=ctx(**context))
    assert any(x.startswith("non-finite input") and where in x for x in r), r


def test_watchdog_closing_orders_keep_their_exemptions_from_missing_inputs():
    close = sell(10, source="watchdog", order_type="MKT", limit_price=None)
    context = ctx(
        breaker="HALTED",
        holdings={
            **held(10),
            "AMD": Holding(contract=Contract.stock("AMD"), quantity=1, mark=float("nan")),
        },
        daily_pnl=None,
        quote=None,
        working=(resting(-10),),  # the watchdog judges reducing from holdings alone
        blocked=frozenset({"NVDA"}),
    )
    assert reasons(close, context) == []


def test_refuses_a_contract_blocked_by_an_unresolved_intent():
    r = reasons(context=ctx(blocked=frozenset({"NVDA"})))
    assert len(r) == 1 and r[0].startswith("contract NVDA has an unresolved order intent")
    assert reasons(buy(symbol="AMD"), ctx(blocked=frozenset({"NVDA"}))) == []


def test_gate_state_rebuilt_from_stored_orders_keeps_day_count_rate_and_duplicate_guard():
    day = "20261120"
    sent = [
        SentOrder("NVDA", "BUY", 10, 5.0, day),
        SentOrder("AMD", "BUY", 5, 0.3, day),
        SentOrder("AMD", "SELL", 5, 90_000.0, "20261119"),
    ]
    state = GateState.rebuild(sent, [], latched=False, now=1000.0, day=day, limits=LIMITS)
    assert state.sent_today == 2
    r = reasons(buy(10), ctx(now=1000.0), state)
    assert any(x.startswith("duplicate: BUY 10 NVDA") for x in r), r
    one_per_day = limits(max_orders_per_day=2)
    r = reasons(buy(1, symbol="AMD"), ctx(now=1000.0), state, one_per_day)
    assert "order rate: 2 sent today (max 2)" in r


def test_gate_state_rebuild_keeps_a_latched_execution_throttle_and_its_window():
    state = GateState.rebuild([], [1.0, 2.0], latched=True, now=50.0, day="d", limits=LIMITS)
    assert state.execution_throttle_latched and len(state.executions) == 2
    r = reasons(context=ctx(now=50.0), state=state)
    assert any("repeated-execution throttle latched" in x for x in r)


def test_slot_wait_paces_orders_within_the_per_second_limit():
    two = limits(max_orders_per_second=2)
    state = GateState()
    assert state.slot_wait(10.0, two) == 0.0
    state.record_sent(buy(1), 10.0, "d")
    state.record_sent(buy(2), 10.4, "d")
    assert state.slot_wait(10.5, two) == pytest.approx(0.5)
    assert state.slot_wait(11.01, two) == 0.0


@pytest.mark.asyncio
async def test_gate_memory_is_rebuilt_from_the_stored_intents_and_executions(store):
    import datetime as dt

    from data_lake import insert_intent, log_safety_event, log_trade, update_intent
    from runtime.gate_context import THROTTLE_LATCHED, THROTTLE_REENABLED, load_gate_state

    now = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)

    def intent(ref, status, ago_s, action="BUY"):
        at = (now - dt.timedelta(seconds=ago_s)).isoformat()
        row = dict(order_ref=ref, source="commander", symbol="NVDA", sec_type="STK")
        row |= dict(action=action, quantity=10, order_type="MKT", tif="DAY")
        store.call(insert_intent, row, at=at, timeout=5)
        store.call(update_intent, ref, status=status, timeout=5)

    intent("a", "filled", 30)
    intent("b", "submitted", 0.5, "SELL")
    intent("c", "not_sent", 1)  # never reached the broker: not counted
    intent("d", "cancelled", 20 * 3600)  # yesterday (UTC): rate windows only
    for i, ago in enumerate((5, 10, 200)):
        store.call(
            log_trade,
            dict(
                exec_id=f"e{i}", order_ref="a", client_id=1, contract=Contract.stock("NVDA"),
                side="BOT", shares=1, price=1.0,
                exec_time=(now - dt.timedelta(seconds=ago)).isoformat(),
            ),
            timeout=5,
        )  # fmt: skip
    two = limits(max_executions_per_window=2, execution_window_s=60.0, max_orders_per_second=1)

    async def load():
        return await load_gate_state(
            store,
            two,
            monotonic_now=1000.0,
            wall_now=now,
            sources=("commander",),
            client_id=1,
            timeout=5,
        )

    state = await load()
    assert state.sent_today == 2 and len(state.sent) == 3
    assert ("NVDA", "BUY", 10) in state.recent
    assert len(state.executions) == 2
    assert state.execution_throttle_latched  # a full window and no re-enable inside it
    r = reasons(sell(10), ctx(now=1000.0, holdings=held(-5.0)), state, two)
    assert any("order rate: 1 sent in the last second" in x for x in r), r
    assert any(x.startswith("duplicate: SELL 10 NVDA was sent 0.5s ago") for x in r), r
    store.call(log_safety_event, "gate", THROTTLE_LATCHED, "latched", timeout=5)
    store.call(log_safety_event, "person", THROTTLE_REENABLED, "ok", timeout=5)
    state = await load()
    assert not state.execution_throttle_latched and state.reenabled_by > 0
