"""Build the execution gate's frozen view of the world from the live broker session."""

from __future__ import annotations

from skills.execution_gate import GateContext, OrderRequest, Quote

from .broker import Broker

__all__ = ["build_gate_context"]


async def build_gate_context(
    broker: Broker,
    request: OrderRequest,
    *,
    breaker: str,
    watchdog_alive: bool,
    market_open: bool,
    now: float,
    quote_wait_s: float = 2.0,
) -> GateContext:
    """Qualify the contract, take its latest quote and the marked positions, right now."""
    contract = await broker.qualify(
        request.symbol, request.sec_type, request.expiry, request.strike, request.right
    )
    quote = None
    if contract is not None:
        snap = await broker.quote(contract, max_wait_s=quote_wait_s)
        if snap is not None:
            is_opt = request.sec_type == "OPT"
            quote = Quote(
                snap.bid,
                snap.ask,
                max(0.0, now - snap.received),
                snap.multiplier,
                (snap.delta if snap.delta is not None else 0.0) if is_opt else 1.0,
                (snap.underlying_price or 0.0) if is_opt else 0.0,
            )
    holdings = await broker.holdings(quote_wait_s)
    daily = broker.account_values().get("DailyPnL", 0.0)
    return GateContext(
        breaker,
        broker.ready,
        watchdog_alive,
        market_open,
        quote,
        holdings,
        daily,
        now,
        contract is not None,
    )
