"""Keeping each position covered exactly by its stops: the plan, and the check of a cover."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from data_lake import Contract
from skills.brackets import Protection
from skills.execution_gate import OrderRequest, WorkingOrder
from skills.protective import (
    CancelRemainder,
    Close,
    Covered,
    Protect,
    Replace,
    Step,
    cover_reasons,
    cover_requests,
    cover_rest,
    plan_cover,
)

MSFT = Contract.stock("MSFT")
SL = Protection(stop_loss_pct=0.02)
SL_TP = Protection(stop_loss_pct=0.02, take_profit_pct=0.05)


def pos(qty: float, avg: float = 100.0, mark: float = 100.0) -> Covered:
    return Covered(contract=MSFT, quantity=qty, avg_price=avg, mark=mark)


def order(ref: str, signed: float, price: float | None = None) -> WorkingOrder:
    return WorkingOrder(contract=MSFT, signed_quantity=signed, limit_price=price, order_ref=ref)


def plan(positions, working, protection=SL, filled=None, ours=None):
    refs = frozenset(w.order_ref for w in working) if ours is None else frozenset(ours)
    return plan_cover(positions, working, filled or {}, protection, ours=refs)


def test_a_covered_position_needs_nothing():
    assert plan([pos(10)], [order("p-sl", -10, 98.0), order("p-tp", -10, 105.0)]) == []


def test_a_partly_filled_parent_has_its_remainder_cancelled():
    working = [order("p", 6, 100.0), order("p-sl", -10, 98.0)]
    [step] = plan([pos(4)], working, filled={"p": 4.0})
    assert isinstance(step, CancelRemainder) and step.parent_ref == "p"
    assert "filled 4 and still works for 6" in step.why


def test_a_parent_not_yet_filled_and_its_held_children_are_left_alone():
    assert plan([], [order("p", 10, 100.0), order("p-sl", -10, 98.0)]) == []


def test_uncovered_quantity_gets_a_stop_from_the_average_cost():
    [step] = plan([pos(4, avg=100.0, mark=101.0)], [], SL_TP)
    assert step == Protect(MSFT, "SELL", 4, 98.0, 105.0, step.why)
    assert "4 of a position of 4 has no stop" in step.why


def test_a_short_position_is_covered_on_the_buy_side():
    [step] = plan([pos(-5, avg=100.0, mark=99.0)], [], SL_TP)
    assert (step.action, step.stop, step.take_profit) == ("BUY", 102.0, 95.0)


def test_a_top_up_takes_the_price_of_the_stop_already_there():
    [step] = plan([pos(10)], [order("a-sl", -4, 97.5)], SL)
    assert isinstance(step, Protect) and (step.quantity, step.stop) == (6, 97.5)


def test_the_market_through_the_stop_closes_instead():
    [step] = plan([pos(10, avg=100.0, mark=97.0)], [], SL)
    assert isinstance(step, Close) and (step.action, step.quantity) == ("SELL", 10)
    assert "through its stop 98" in step.why


def test_too_much_protection_is_replaced_by_exactly_the_position():
    working = [order("a-sl", -10, 97.5), order("a-tp", -10, 106.0)]
    [step] = plan([pos(4)], working, SL_TP)
    assert isinstance(step, Replace) and step.cancel == ("a-sl", "a-tp")
    assert step.protect == Protect(MSFT, "SELL", 4, 97.5, 106.0, step.why)


def test_protective_orders_on_a_flat_contract_are_cancelled_even_without_protection():
    [step] = plan([], [order("a-sl", -10, 97.5)], None)
    assert isinstance(step, Replace) and step.cancel == ("a-sl",) and step.protect is None


def test_only_our_orders_are_cancelled_and_a_persons_order_holds_nothing_back():
    assert plan([], [order("a-sl", -10, 97.5)], ours=()) == []
    assert plan([pos(4)], [order("a-sl", -10, 97.5)], ours=()) == []  # not ours to replace
    [step] = plan([pos(10)], [order("manual", -3, 120.0)], SL, ours=())
    assert isinstance(step, Protect) and step.quantity == 10


def test_without_protection_uncovered_positions_are_left_as_they_are():
    assert plan([pos(10)], [], None) == []


def test_a_key_with_an_unknown_order_state_is_skipped():
    assert plan_cover([pos(10)], [], {}, SL, ours=frozenset(), skip=frozenset({"MSFT"})) == []


def _check(orders, position, working=(), breaker="ACTIVE"):
    return " | ".join(
        cover_reasons(
            orders, position, list(working), breaker=breaker, connected=True, collar_pct=0.5
        )
    )


def test_the_cover_check_refuses_more_than_the_position_and_the_wrong_side():
    step = Protect(MSFT, "SELL", 6, 98.0, None, "")
    _, orders = cover_requests(step, 1)
    assert _check(orders, pos(10), [order("a-sl", -4, 98.0)]) == ""
    assert "would exceed the position of 10" in _check(orders, pos(10), [order("a-sl", -5, 98.0)])
    assert "stop 98 is through the market" in _check(orders, pos(10, mark=97.0))
    assert "HALTED" in _check(orders, pos(10), breaker="HALTED")
    assert "must be a STP or LMT on the reducing side" in _check(orders, pos(-10))
    far = dataclasses.replace(orders[0], aux_price=40.0)
    assert "protective collar" in _check([far], pos(10))


def test_a_cover_is_a_gtc_stop_and_take_profit_named_after_one_group():
    group, (stop, take) = cover_requests(Protect(MSFT, "SELL", 6, 98.0, 105.0, ""), 7)
    assert (stop.order_type, stop.aux_price, stop.tif, stop.ref_seed) == ("STP", 98.0, "GTC", "-sl")
    assert (take.order_type, take.limit_price, take.ref_seed) == ("LMT", 105.0, "-tp")
    assert group == cover_requests(Protect(MSFT, "SELL", 6, 98.0, 105.0, "x"), 7)[0]
    assert group != cover_requests(Protect(MSFT, "SELL", 6, 97.0, 105.0, ""), 7)[0]


def test_a_partial_close_leaves_the_rest_at_the_lifted_prices():
    close = OrderRequest(contract=MSFT, action="SELL", quantity=4, order_type="MKT")
    lifted = [order("a-sl", -10, 97.5), order("a-tp", -10, 106.0)]
    rest = cover_rest(close, 10, lifted, ("a-sl", "a-tp"))
    assert rest is not None and (rest.quantity, rest.stop, rest.take_profit) == (6, 97.5, 106.0)
    assert cover_rest(dataclasses.replace(close, quantity=10), 10, lifted, ("a-sl",)) is None


# --- property: after the plan is carried out, every position is covered exactly -----------


def _apply(steps: list[Step], held: float, working: list[WorkingOrder]) -> tuple[float, float]:
    """Carry out the plan as a broker would (a cancelled parent takes its held children);
    return (position, stop quantity covering it)."""
    book = {w.order_ref: w for w in working}
    for s in steps:
        if isinstance(s, CancelRemainder):
            book = {r: w for r, w in book.items() if not r.startswith(s.parent_ref)}
    if any(isinstance(s, CancelRemainder) for s in steps):  # the second look
        steps = plan([pos(held)] if held else [], list(book.values()), SL)
    for s in steps:
        if isinstance(s, Replace):
            book = {r: w for r, w in book.items() if r not in s.cancel}
            if s.protect is not None:
                steps.append(s.protect)
        elif isinstance(s, Protect):
            book[f"n{len(book)}-sl"] = order(
                f"n{len(book)}-sl", -s.quantity if s.action == "SELL" else s.quantity, s.stop
            )
        elif isinstance(s, Close):
            held += s.quantity if s.action == "BUY" else -s.quantity
    stops = sum(
        abs(w.signed_quantity)
        for r, w in book.items()
        if r.endswith("-sl") and r.removesuffix("-sl") not in book
    )
    return held, stops


@settings(max_examples=300, deadline=None)
@given(
    held=st.integers(-20, 20),
    stops=st.lists(st.integers(1, 25), max_size=3),
    parent=st.one_of(st.none(), st.tuples(st.integers(1, 10), st.integers(0, 10))),
    mark_move=st.floats(-0.05, 0.05),
)
def test_every_position_ends_covered_exactly(held, stops, parent, mark_move):
    side = -1 if held >= 0 else 1
    working = [
        order(f"s{i}-sl", side * q, 98.0 if held >= 0 else 102.0) for i, q in enumerate(stops)
    ]
    filled = {}
    if parent is not None and held:
        left, done = parent
        working += [order("p", -side * left, 100.0), order("p-sl", side * (left + done), 98.0)]
        filled = {"p": float(done)}
    positions = [pos(held, mark=100.0 * (1 + mark_move))] if held else []
    steps = plan(positions, working, SL, filled=filled)
    if parent is not None and held and parent[1] == 0:
        return  # a parent with nothing filled yet: judged once it is done
    after, covered = _apply(steps, held, working)
    assert covered == abs(after), (steps, after, covered)  # fmt: skip
