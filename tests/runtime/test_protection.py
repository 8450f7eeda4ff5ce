"""Lifting a position's protective orders before a close by signal: only when the gate accepts
the close without them, only ours, only once the broker confirms the cancel (a partial close's
rest is covered again by the caller: tests/skills/test_protective.py)."""

import pytest

from data_lake import Contract
from runtime.heartbeat import SystemClock
from runtime.protection import lift_protection, protective_guards
from skills.execution_gate import GateContext, Holding, OrderRequest, Quote, WorkingOrder

STOP = "cmd-c1-abc-sl"


class FakeBroker:
    """A hand-written stand-in for the broker's order book: what is ours, what a cancel does."""

    def __init__(self, ours=(STOP,), on_cancel="Cancelled"):
        self.status = {STOP: "PreSubmitted"}
        self.ours, self.on_cancel = set(ours), on_cancel
        self.cancelled: list[str] = []

    def owns_working(self, ref):
        return ref in self.ours and self.status.get(ref) == "PreSubmitted"

    def cancel(self, ref):
        self.cancelled.append(ref)
        self.status[ref] = self.on_cancel
        return True

    def order_status(self, ref):
        return self.status.get(ref)


def ctx(held=30.0) -> GateContext:
    return GateContext(
        breaker="ACTIVE",
        connected=True,
        watchdog_alive=True,
        market_open=True,
        quote=Quote(99.95, 100.05, 0.5),
        holdings={"MSFT": Holding(contract=Contract.stock("MSFT"), quantity=held, mark=100.0)},
        daily_pnl=0.0,
        now=1000.0,
        working=(
            WorkingOrder(
                contract=Contract.stock("MSFT"),
                signed_quantity=-held,
                limit_price=95.0,
                order_ref=STOP,
            ),
        ),
    )


def close(qty=30.0) -> OrderRequest:
    return OrderRequest(
        contract=Contract.stock("MSFT"), action="SELL", quantity=qty, order_type="LMT",
        limit_price=99.95,
    )  # fmt: skip


async def lift(broker, request=None, check=lambda r, c: [], timeout=0.5):
    request = request or close()
    return await lift_protection(
        broker, request, ctx(), protective_guards(request, ctx()), check,
        timeout=timeout, clock=SystemClock(),
    )  # fmt: skip


def test_only_a_reducing_request_on_the_guarded_contract_sees_the_guards():
    assert protective_guards(close(), ctx()) == (STOP,)
    buy = OrderRequest(contract=Contract.stock("MSFT"), action="BUY", quantity=5, order_type="MKT")
    assert protective_guards(buy, ctx()) == ()


@pytest.mark.asyncio
@pytest.mark.parametrize("qty", [30.0, 10.0])
async def test_a_close_cancels_the_stop_and_waits_for_the_broker(qty):
    broker = FakeBroker()
    assert await lift(broker, close(qty)) is None
    assert broker.cancelled == [STOP]


@pytest.mark.asyncio
async def test_the_gate_sees_the_close_without_the_stop_and_a_refusal_keeps_it():
    seen = []

    def check(r, c):
        seen.append(c.working)
        return ["daily loss breached"]

    broker = FakeBroker()
    why = await lift(broker, check=check)
    assert why == "daily loss breached (its protective orders stay)"
    assert seen == [()] and broker.cancelled == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("broker", "request_", "expected"),
    [
        (FakeBroker(ours=()), close(), "are not this session's: not cancelled"),
        (FakeBroker(on_cancel="Filled"), close(), "filled meanwhile: nothing left to close"),
        (FakeBroker(on_cancel="PendingCancel"), close(), "not confirmed cancelled within 0.2s"),
    ],
)
async def test_the_close_is_refused_with_its_reason(broker, request_, expected):
    why = await lift(broker, request_, timeout=0.2)
    assert why is not None and expected in why
