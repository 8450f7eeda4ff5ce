"""The execution gate fed by the live broker session (paper gateway over TCP)."""

import logging
import time
import tomllib
from pathlib import Path

import pytest
import pytest_asyncio
from ib_client import NAME as IB_CLIENT_LIBRARY
from lake import intent, read

from data_lake import Contract, Store, query_safety_events, query_trades
from paper_gateway.testing import eventually_async
from runtime.broker import Broker
from runtime.config import Secrets, parse_config
from runtime.gate_context import build_gate_context
from skills.execution_gate import GateState, OrderRequest, place_order_with_guard

ROOT = Path(__file__).resolve().parents[2]


def make_config(port, **risk):
    data = tomllib.loads((ROOT / "config/paper.toml").read_text())
    data["broker"].update(
        port=port, connect_timeout_s=3.0, request_timeout_s=3.0, client_library=IB_CLIENT_LIBRARY
    )
    data["risk"].update(risk)
    return parse_config(data)


@pytest_asyncio.fixture
async def live(gateway, tmp_path):
    db = Store.open(tmp_path)
    cfg = make_config(gateway.port)
    broker = Broker(cfg.broker, "paper", Secrets({}), db)
    await broker.start()
    yield broker, db, cfg
    await broker.close()
    db.close()


async def send(broker, db, limits, request, state=None, **ctx):
    context = await build_gate_context(
        broker,
        request,
        breaker=ctx.get("breaker", "ACTIVE"),
        watchdog_alive=ctx.get("watchdog_alive", True),
        market_open=True,
        now=time.monotonic(),
        quote_wait_s=1.0,
    )
    return await place_order_with_guard(request, context, state or GateState(), limits, db, broker)


def order(symbol="NVDA", qty=10, price=None, action="BUY", cycle=1, contract=None, **kw):
    return OrderRequest(
        contract=contract or Contract.stock(symbol),
        action=action,
        quantity=qty,
        order_type="LMT" if price else "MKT",
        limit_price=price,
        cycle_id=cycle,
        **kw,
    )


@pytest.mark.asyncio
async def test_collar_uses_the_live_quote(live, admin):
    broker, db, cfg = live
    refused = await send(broker, db, cfg.risk, order(price=150.0))  # NVDA trades near 182
    assert not refused.accepted and "from the mid" in refused.reasons[0]
    accepted = await send(broker, db, cfg.risk, order(price=183.0, cycle=2))
    assert accepted.accepted
    await eventually_async(lambda: intent(db, accepted.order_ref)["status"] == "filled")
    assert admin.call("state")["executions"] == 1


@pytest.mark.asyncio
async def test_frozen_gateway_means_a_stale_quote_and_a_refusal(live, admin, gateway):
    broker, db, _ = live
    limits = make_config(gateway.port, quote_max_age_s=0.2).risk
    contract = await broker.qualify(Contract.stock("AAPL"))
    await broker.quote(contract)
    admin.call("freeze", seconds=1.0)
    t0 = time.monotonic()
    await eventually_async(lambda: time.monotonic() - t0 > 0.3, what="quote ages past 0.2 s")
    verdict = await send(broker, db, limits, order(symbol="AAPL"))
    assert not verdict.accepted and any("quote stale" in r for r in verdict.reasons)
    assert admin.call("state")["open_orders"] == []


@pytest.mark.asyncio
async def test_unknown_symbol_is_refused_unqualified_with_no_quote(live, gateway):
    broker, db, _ = live
    limits = make_config(gateway.port, allowed_symbols=["NVDA", "ZZZZ"]).risk
    verdict = await send(broker, db, limits, order(symbol="ZZZZ"))
    assert not verdict.accepted
    assert verdict.reasons[0].startswith("contract ZZZZ could not be qualified")
    assert "no quote" in verdict.reasons[1]


@pytest.mark.asyncio
async def test_position_limit_counts_live_positions(live, admin, gateway):
    broker, db, _ = live
    admin.call("set_position", symbol="NVDA", quantity=250, avg_cost=182.0)
    await eventually_async(lambda: broker.positions(), what="position pushed")
    limits = make_config(gateway.port, max_position_notional=50_000.0).risk
    verdict = await send(broker, db, limits, order(qty=30))
    assert not verdict.accepted
    [reason] = verdict.reasons
    assert reason == "NVDA position value after the order 50,966 exceeds 50,000"  # 280 x 182.02
    reducing = await send(broker, db, limits, order(qty=30, action="SELL", cycle=2))
    assert reducing.accepted


@pytest.mark.asyncio
async def test_option_order_notional_uses_the_multiplier_and_live_delta(live, gateway):
    broker, db, _ = live
    stock = await broker.qualify(Contract.stock("AMD"))
    expiries, strikes = await broker.option_chain(stock)
    strike = min(strikes, key=lambda k: abs(k - 158))
    opt = order(contract=Contract.option("AMD", expiries[2], strike, "C"), qty=50)
    limits = make_config(gateway.port, max_order_notional=10_000.0).risk
    verdict = await send(broker, db, limits, opt)
    assert not verdict.accepted
    assert any("(multiplier 100)" in r for r in verdict.reasons)
    [event] = read(db, query_safety_events, "gate_refusal")
    assert event["order_ref"] == verdict.order_ref


@pytest.mark.asyncio
async def test_cancel_and_global_cancel_through_the_adapter(live, admin, connect, caplog):
    broker, db, cfg = live
    caplog.set_level(logging.INFO, logger="runtime.broker")
    a = await send(broker, db, cfg.risk, order(symbol="AAPL", price=222.0))
    b = await send(broker, db, cfg.risk, order(symbol="MSFT", price=400.0, cycle=2))
    assert a.accepted and b.accepted
    await eventually_async(lambda: len(admin.call("state")["open_orders"]) == 2)
    assert broker.cancel(a.order_ref)
    await eventually_async(lambda: intent(db, a.order_ref)["status"] == "cancelled")
    broker.global_cancel()
    await eventually_async(lambda: intent(db, b.order_ref)["status"] == "cancelled")
    assert admin.call("state")["open_orders"] == [] and read(db, query_trades) == []
    assert broker.reject_streak == 0  # our own cancels are not rejects
    answers = [r for r in caplog.records if r.name == "runtime.broker" and " 202 " in r.message]
    assert answers and all(r.levelno == logging.INFO for r in answers)  # nor warnings


@pytest.mark.asyncio
async def test_a_cancel_we_did_not_ask_for_stays_a_warning_and_counts(live, admin, caplog):
    broker, db, cfg = live
    caplog.set_level(logging.INFO, logger="runtime.broker")
    admin.call("reject_next", code=202)  # the broker cancels our order on its own
    sent = await send(broker, db, cfg.risk, order(symbol="AAPL", price=222.0))
    assert sent.accepted
    await eventually_async(lambda: broker.reject_streak == 1, what="the 202 counted as a reject")
    answers = [r for r in caplog.records if r.name == "runtime.broker" and " 202 " in r.message]
    assert answers and all(r.levelno == logging.WARNING for r in answers)
