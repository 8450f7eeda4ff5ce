"""The gate replayed on recorded inputs: exact with the recorded limits, and with other limits
the counters follow what the replay sent, not what the recording sent."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.replay_gate import GateReplayer
from runtime.replay_record import context_doc, state_doc
from skills.execution_gate import (
    GateContext,
    GateState,
    OrderRequest,
    Quote,
    evaluate,
    order_ref_for,
)
from skills.risk import RiskConfig

LIMITS = RiskConfig(max_orders_per_second=1)


def _request(symbol: str, decision_id: int) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        sec_type="STK",
        action="BUY",
        quantity=10,
        order_type="LMT",
        limit_price=100.0,
        cycle_id=1,
        decision_id=decision_id,
    )


def _context(now: float) -> GateContext:
    return GateContext(
        breaker="ACTIVE",
        connected=True,
        watchdog_alive=True,
        market_open=True,
        quote=Quote(99.9, 100.1, 0.2),
        holdings={},
        daily_pnl=0.0,
        now=now,
    )


def _record(
    state: GateState, r: OrderRequest, now: float, limits: RiskConfig = LIMITS, lag: float = 0.01
) -> dict[str, object]:
    """What the commander records for one gate call (and what the gate does with it)."""
    ctx = _context(now)
    call: dict[str, object] = {
        "request": dataclasses.asdict(r),
        "day": "20261120",
        "context": context_doc(ctx),
        "state": state_doc(state),
    }
    reasons = evaluate(r, ctx, state, limits, "20261120")
    if not reasons:
        call["sent_at"] = now + lag
        state.record_sent(r, now + lag, "20261120")
    call["verdict"] = {"accepted": not reasons, "order_ref": order_ref_for(r), "reasons": reasons}
    return call


def test_replay_with_the_recorded_limits_gives_the_recorded_verdicts():
    state = GateState()
    a, b = _request("GS", 1), _request("MSFT", 2)
    calls = [_record(state, a, 100.0), _record(state, b, 100.2)]
    assert calls[0]["verdict"]["accepted"] and not calls[1]["verdict"]["accepted"]  # type: ignore[index]
    gate = GateReplayer(LIMITS, LIMITS)
    verdicts = [gate.judge(a, calls[0]), gate.judge(b, calls[1])]
    assert [v.public() for v in verdicts] == [
        {k: tuple(v) if k == "reasons" else v for k, v in c["verdict"].items()}  # type: ignore[union-attr]
        for c in calls
    ]
    assert verdicts[1].checks[0][0] == "order_rate"


def test_an_order_the_replay_refuses_leaves_the_rate_window_for_the_next():
    state = GateState()
    a, b = _request("GS", 1), _request("MSFT", 2)
    calls = [_record(state, a, 100.0), _record(state, b, 100.2)]
    without_gs = LIMITS.model_copy(
        update={"allowed_symbols": tuple(s for s in LIMITS.allowed_symbols if s != "GS")}
    )
    gate = GateReplayer(without_gs, LIMITS)
    first = gate.judge(a, calls[0])
    assert not first.accepted and first.checks[0][0] == "allow_list"
    second = gate.judge(b, calls[1])  # GS was never sent: MSFT fits in the rate now
    assert second.accepted and second.order_ref == order_ref_for(b)


def test_a_refusal_after_the_checks_is_kept_as_the_worlds_answer():
    state = GateState()
    a = _request("MSFT", 1)
    call = _record(state, a, 100.0)
    del call["sent_at"]  # the broker refused to send it: the checks had passed
    call["verdict"] = {
        "accepted": False,
        "order_ref": order_ref_for(a),
        "reasons": ["broker did not accept the order for sending: ConnectionError: gone"],
    }
    verdict = GateReplayer(LIMITS, LIMITS).judge(a, call)
    assert not verdict.accepted and verdict.stage == "after_checks"
    assert verdict.reasons == (
        "broker did not accept the order for sending: ConnectionError: gone",
    )


_orders = st.lists(
    st.tuples(
        st.sampled_from(["MSFT", "GS", "AMD"]),
        st.sampled_from([5, 10, 300]),
        st.floats(0.0, 2.0),  # seconds since the previous order
    ),
    min_size=1,
    max_size=12,
)
_limits = st.builds(
    RiskConfig,
    max_orders_per_second=st.integers(1, 3),
    max_orders_per_minute=st.integers(2, 6),
    max_order_notional=st.sampled_from([800.0, 5_000.0, 25_000.0]),
    duplicate_window_s=st.sampled_from([0.0, 1.0, 60.0]),
)


@settings(max_examples=200, deadline=None)
@given(orders=_orders, recorded_limits=_limits, other_limits=_limits)
def test_replaying_under_other_limits_equals_running_under_them(
    orders, recorded_limits, other_limits
):
    """A cycle recorded under one set of limits and replayed under another gets the verdicts
    a run under the other limits would have got (same world, orders counted at their view)."""
    now, timeline = 1000.0, []
    for i, (symbol, qty, gap) in enumerate(orders):
        now += gap
        timeline.append((dataclasses.replace(_request(symbol, i), quantity=qty), now))
    recording, state = [], GateState()
    for r, at in timeline:
        recording.append(_record(state, r, at, recorded_limits, lag=0.0))
    direct, state = [], GateState()
    for r, at in timeline:
        direct.append(_record(state, r, at, other_limits, lag=0.0)["verdict"])
    gate = GateReplayer(other_limits, recorded_limits)
    replayed = [
        gate.judge(r, call).public() for (r, _), call in zip(timeline, recording, strict=True)
    ]
    assert [v["accepted"] for v in replayed] == [v["accepted"] for v in direct]  # type: ignore[index]
    assert [list(v["reasons"]) for v in replayed] == [v["reasons"] for v in direct]  # type: ignore[index]
