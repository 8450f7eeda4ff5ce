"""Build the execution gate's frozen view of the world from the live broker session."""

from __future__ import annotations

import datetime as dt
import logging

from data_lake import (
    Contract,
    Store,
    intents_sent_since,
    last_safety_event,
    log_safety_event,
    query_trades,
)
from skills.execution_gate import (
    FLATTENERS,
    GateContext,
    GateState,
    GateVerdict,
    OrderRequest,
    Quote,
    SentOrder,
    order_ref_for,
)
from skills.risk import RiskConfig

from .broker import Broker
from .market_hours import exchange_day

__all__ = [
    "THROTTLE_LATCHED",
    "THROTTLE_REENABLED",
    "build_gate_context",
    "inputs_unavailable",
    "load_gate_state",
]

log = logging.getLogger("runtime.gate_context")

# safety-event kinds: the execution throttle latched; a person re-enabled it (the CLI writes
# this row; the running daemon applies the newest one it has not applied yet, every cycle)
THROTTLE_LATCHED = "execution_throttle"
THROTTLE_REENABLED = "execution_throttle_reenabled"


def inputs_unavailable(
    store: Store, request: OrderRequest, exc: BaseException, cycle_id: int | None
) -> GateVerdict:
    """The gate's inputs could not be read from the broker (a timeout, a lost socket): the
    order is refused, failing closed, and the refusal recorded like any other."""
    ref = order_ref_for(request)
    reason = f"gate inputs unavailable from the broker ({exc!r}): failing closed"
    log.warning("order %s refused: %s", ref, reason)
    store.post(
        log_safety_event,
        "gate",
        "gate_refusal",
        reason,
        "warning",
        order_ref=ref,
        cycle_id=cycle_id,
    )
    return GateVerdict(False, ref, (reason,))


async def build_gate_context(
    broker: Broker,
    request: OrderRequest,
    *,
    breaker: str,
    watchdog_alive: bool,
    market_open: bool,
    now: float,
    quote_wait_s: float = 2.0,
    blocked: frozenset[str] = frozenset(),
    paused: tuple[str, ...] = (),
) -> GateContext:
    """Qualify the contract, take its latest quote, the marked positions and the orders
    resting at the broker (every client id), right now. Nothing missing is defaulted: an
    unknown daily PnL, option delta or quote time reaches the gate as None (it refuses).

    `blocked` holds the contract keys with an unresolved intent (read from the store by the
    caller); the contracts IB's error codes made untradable this cycle, and a refuse-all
    condition (10197), come from the broker; `paused` holds the reasons no new order may go
    now (the gateway's restart window, market data not yet proven after a reconnect). The
    watchdog's closing orders skip the resting-orders request: it cancels every order before
    it closes, and its closes must not wait on one more broker round trip."""
    contract = await broker.qualify(request.contract)
    quote = None
    if contract is not None:
        snap = await broker.quote(contract, max_wait_s=quote_wait_s)
        if snap is not None:
            is_opt = request.contract.is_option
            quote = Quote(
                snap.bid,
                snap.ask,
                None if snap.received is None else max(0.0, now - snap.received),
                snap.multiplier,
                snap.delta if is_opt else 1.0,
                (snap.underlying_price or 0.0) if is_opt else 0.0,
                pre_outage=snap.pre_outage,
                market_data_type=snap.market_data_type,
                suspect=snap.suspect,
            )
    holdings = await broker.holdings(quote_wait_s)
    working = () if request.source in FLATTENERS else await broker.working_orders()
    return GateContext(
        breaker=breaker,
        connected=broker.ready,
        watchdog_alive=watchdog_alive,
        market_open=market_open,
        quote=quote,
        holdings=holdings,
        daily_pnl=broker.account_values().get("DailyPnL"),
        now=now,
        qualified=contract is not None,
        working=working,
        blocked=blocked,
        paused=paused,
        untradable=broker.market_data_refusals(),
        refuse_all=broker.refusing_all(),
    )


async def load_gate_state(
    store: Store,
    limits: RiskConfig,
    *,
    monotonic_now: float,
    wall_now: dt.datetime,
    sources: tuple[str, ...],
    client_id: int,
    timeout: float,
) -> GateState:
    """Rebuild the gate's memory from the database at start: orders sent in the last day
    (daily count, rate windows, duplicate guard), this session's executions in the throttle
    window, and whether the repeated-execution throttle is latched (a latch not followed by
    a person's re-enable, or a full window with no re-enable inside it)."""
    since = (wall_now - dt.timedelta(days=1, seconds=5)).isoformat()
    rows = await store.run(intents_sent_since, since, sources, timeout=timeout)
    sent = []
    for r in rows:
        at = _parse(r["created_at"])
        if at is None:
            continue
        key = Contract.from_row(r).key
        sent.append(
            SentOrder(
                key,
                r["action"],
                float(r["quantity"]),
                max(0.0, (wall_now - at).total_seconds()),
                exchange_day(at),
                bool(r.get("parent_ref")),
            )
        )
    window = dt.timedelta(seconds=limits.execution_window_s + 5)
    trades = await store.run(
        query_trades, since=(wall_now - window).isoformat(), limit=100_000, timeout=timeout
    )
    ages = [
        (wall_now - at).total_seconds()
        for t in trades
        if t["client_id"] == client_id and (at := _parse(t["exec_time"])) is not None
    ]
    latch = await store.run(last_safety_event, THROTTLE_LATCHED, timeout=timeout)
    reenable = await store.run(last_safety_event, THROTTLE_REENABLED, timeout=timeout)
    reenable_id = int(reenable["id"]) if reenable else 0
    latched = latch is not None and int(latch["id"]) > reenable_id
    in_window = [a for a in ages if 0 <= a <= limits.execution_window_s]
    if len(in_window) >= limits.max_executions_per_window:
        reenabled_at = _parse(reenable["at"]) if reenable else None
        oldest = wall_now - dt.timedelta(seconds=max(in_window))
        latched = latched or reenabled_at is None or reenabled_at < oldest
    state = GateState.rebuild(
        sent,
        ages,
        latched=latched,
        now=monotonic_now,
        day=exchange_day(wall_now),
        limits=limits,
    )
    state.reenabled_by = reenable_id
    return state


def _parse(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
