"""The execution gate: deterministic pre-trade checks, and the only path to the broker.

`place_order_with_guard()` evaluates every check against a frozen snapshot of the world
(`GateContext`). Each check is a small function that returns a reason or None. A refusal is
stored as a safety event with every failing reason and returned; it never raises. An accepted
order's intent, with a deterministic orderRef, is stored before the broker sees the order.

What an LLM produces can only ever become an `OrderRequest`; the limits (`RiskConfig`), the
context and the gate's own counters are out of its reach, and there is no bypass switch.
Exposure-reducing orders skip the exposure limits (they must always be able to reduce risk);
the watchdog's closing orders (and the panic command's, source `panic`: the same code on its
own session) are the only orders allowed while the breaker is HALTED.

Working orders count: an order is exposure-reducing only if, together with the orders resting
at the broker on that contract, it can neither flip nor extend the position; the exposure
limits count resting orders as if filled. Missing inputs fail closed, each with its own
reason (no daily PnL, an option without a delta, a quote without a receive time, a NaN); the
watchdog's reducing orders keep their exemptions (they judge reducing from holdings alone and
skip the input checks that would stop a close).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from data_lake import (
    Contract,
    IntentStatus,
    StorageUnavailable,
    Store,
    insert_intent,
    log_safety_event,
    update_intent,
)

from .risk import RiskConfig

__all__ = [
    "CHECKS",
    "FLATTENERS",
    "PANIC",
    "WATCHDOG",
    "GateContext",
    "GateState",
    "GateVerdict",
    "Holding",
    "OrderRequest",
    "Quote",
    "SentOrder",
    "Submitter",
    "WorkingOrder",
    "evaluate",
    "evaluate_named",
    "is_flattener_ref",
    "order_ref_for",
    "place_order_with_guard",
]

log = logging.getLogger("skills.execution_gate")

WATCHDOG = "watchdog"
PANIC = "panic"  # the panic command's closes: the watchdog's code on its own session
# The kill switch's closing orders (the watchdog's, the panic command's): the only orders
# allowed while HALTED, with the watchdog's exemptions. Never a source an LLM can choose.
FLATTENERS = frozenset({WATCHDOG, PANIC})
_REF_PREFIX = {"commander": "cmd", WATCHDOG: "wd", PANIC: "panic"}


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    """What the commander (or the watchdog, or a person) asks the gate to send."""

    contract: Contract
    action: str
    quantity: float
    order_type: str
    limit_price: float | None = None
    tif: str = "DAY"
    source: str = "commander"
    cycle_id: int | None = None
    decision_id: int | None = None
    ref_seed: str = ""  # extra idempotency material (e.g. the watchdog's attempt number)
    aux_price: float | None = None  # a protective stop's trigger price (STP children only)
    parent_ref: str = ""  # a protective child: its parent's orderRef (skills.brackets)

    @property
    def key(self) -> str:
        return self.contract.key

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.action == "BUY" else -self.quantity


@dataclass(frozen=True, slots=True)
class Quote:
    bid: float
    ask: float
    age_s: float | None  # seconds since the quote was received (monotonic); None: unknown
    multiplier: float = 1.0
    delta: float | None = 1.0  # per unit; 1 for stock; None: the option has no model delta
    underlying_price: float = 0.0  # for options; for stock the mid is used
    # received before the last reconnect or connectivity restore: stale whatever its age
    pre_outage: bool = False
    # IB's marketDataType: 1 live, 2 frozen, 3 delayed, 4 delayed-frozen (only 1 prices orders)
    market_data_type: int = 1
    suspect: str = ""  # why the quote cannot be trusted now, e.g. a broken data farm

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask)


@dataclass(frozen=True, slots=True, kw_only=True)
class Holding:
    contract: Contract
    quantity: float
    mark: float
    multiplier: float = 1.0
    delta: float | None = 1.0  # None: an option without a model delta (the gate refuses)
    underlying_price: float = 0.0

    @property
    def notional(self) -> float:
        return abs(self.quantity * self.mark * self.multiplier)

    @property
    def dollar_delta(self) -> float:
        """Dollar delta (an unknown delta counts 0 here; the gate refuses on it first)."""
        und = self.underlying_price or self.mark
        return self.quantity * (self.delta or 0.0) * self.multiplier * und


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkingOrder:
    """An order resting at the broker (any client id): what is left of it, signed."""

    contract: Contract
    signed_quantity: float  # remaining quantity, + buy, - sell
    limit_price: float | None = None
    multiplier: float = 1.0
    order_ref: str = ""

    @property
    def key(self) -> str:
        return self.contract.key


@dataclass(frozen=True, slots=True)
class SentOrder:
    """An order the gate sent earlier (rebuilt from the stored intents at start)."""

    key: str
    action: str
    quantity: float
    age_s: float  # seconds before now (wall clock at rebuild)
    day: str  # YYYYMMDD it was sent on
    protective: bool = False  # a bracket's child: rate windows only, not the duplicate guard


@dataclass(frozen=True, slots=True, kw_only=True)
class GateContext:
    """A frozen view of the world at the moment of the decision."""

    breaker: str  # ACTIVE | REDUCING | HALTED
    connected: bool
    watchdog_alive: bool
    market_open: bool
    quote: Quote | None
    holdings: Mapping[str, Holding]  # by contract key
    daily_pnl: float | None  # None: the broker has not reported it (the gate refuses)
    now: float  # monotonic seconds
    qualified: bool = True  # the broker resolved the contract to exactly one conId
    working: tuple[WorkingOrder, ...] = ()  # orders resting at the broker, every client id
    blocked: frozenset[str] = frozenset()  # contract keys with an unresolved intent
    # why no new orders may go now (the gateway's restart window, market data not yet
    # proven after a reconnect); the watchdog's closing orders are exempt
    paused: tuple[str, ...] = ()
    # from IB's error codes (runtime/ib_errors.py): contract key -> why it is untradable this
    # cycle (354, 10089, 10168); and why every new order is refused now (10197), or None
    untradable: Mapping[str, str] = field(default_factory=dict)
    refuse_all: str | None = None


@dataclass
class GateState:
    """The gate's own counters (one per process). Orders are counted when they are sent."""

    sent: collections.deque[float] = field(default_factory=collections.deque)
    day: str = ""
    sent_today: int = 0
    executions: collections.deque[float] = field(default_factory=collections.deque)
    execution_throttle_latched: bool = False
    recent: dict[tuple[str, str, float], float] = field(default_factory=dict)
    reenabled_by: int = 0  # id of the person's last re-enable record applied (0: none)

    def record_sent(
        self, request: OrderRequest, now: float, day: str, *, duplicate_guard: bool = True
    ) -> None:
        """Count an order sent now (rate windows, daily count) and, unless it is a protective
        child (`duplicate_guard=False`), remember it for the duplicate guard."""
        self.sent.append(now)
        if day != self.day:
            self.day, self.sent_today = day, 0
        self.sent_today += 1
        if not duplicate_guard:
            return
        self.recent[(request.key, request.action, request.quantity)] = now
        if len(self.recent) > 1000:  # keep the duplicate guard's memory bounded (a day is ample)
            self.recent = {k: t for k, t in self.recent.items() if now - t < 86_400}

    def record_execution(self, now: float, limits: RiskConfig) -> bool:
        """Count an execution; return True when this one latched the throttle."""
        self.executions.append(now)
        while self.executions and now - self.executions[0] > limits.execution_window_s:
            self.executions.popleft()
        if (
            not self.execution_throttle_latched
            and len(self.executions) >= limits.max_executions_per_window
        ):
            self.execution_throttle_latched = True
            return True
        return False

    def reenable_executions(self) -> None:
        """A person re-enables trading after the repeated-execution throttle latched."""
        self.execution_throttle_latched = False
        self.executions.clear()

    def slot_wait(self, now: float, limits: RiskConfig) -> float:
        """Seconds until one more order fits in the per-second rate (0: it fits now)."""
        recent = sorted(t for t in self.sent if now - t < 1.0)
        if len(recent) < limits.max_orders_per_second:
            return 0.0
        return max(0.0, recent[-limits.max_orders_per_second] + 1.0 - now)

    @classmethod
    def rebuild(
        cls,
        sent: Iterable[SentOrder],
        execution_ages: Iterable[float],
        *,
        latched: bool,
        now: float,
        day: str,
        limits: RiskConfig,
    ) -> GateState:
        """Rebuild the counters from what was stored: orders sent (their age and day) and
        executions (their age), so a restart neither resets the daily count, the rate
        windows and the duplicate guard, nor forgets a latched execution throttle."""
        state = cls(day=day)
        for o in sorted(sent, key=lambda o: -o.age_s):
            if not (math.isfinite(o.age_s) and o.age_s >= 0):
                continue
            at = now - o.age_s
            if o.age_s <= 86_400:
                state.sent.append(at)
                if not o.protective:
                    state.recent[(o.key, o.action, o.quantity)] = at
            if o.day == day:
                state.sent_today += 1
        for age in sorted((a for a in execution_ages if math.isfinite(a)), reverse=True):
            if 0 <= age <= limits.execution_window_s:
                state.executions.append(now - age)
        state.execution_throttle_latched = latched
        return state


@dataclass(frozen=True, slots=True)
class GateVerdict:
    accepted: bool
    order_ref: str | None
    reasons: tuple[str, ...] = ()
    broker_order_id: int | None = None
    children: tuple[str, ...] = ()  # orderRefs of the protective children sent with it


class Submitter(Protocol):
    def submit(self, order_ref: str, request: OrderRequest) -> int:
        """Send the order to the broker; return its order id; raise if it was not sent."""
        ...


@dataclass(frozen=True)
class _Eval:
    """Per-request values shared by the checks (computed once; the exposures on first use)."""

    r: OrderRequest
    ctx: GateContext
    state: GateState
    limits: RiskConfig
    day: str
    held: float
    reducing: bool
    price: float | None

    @property
    def multiplier(self) -> float:
        return (
            self.ctx.quote.multiplier
            if self.ctx.quote
            else (100.0 if self.r.contract.is_option else 1.0)
        )

    @functools.cached_property
    def exposure_before(self) -> dict[str, Holding]:
        """Holdings with resting orders counted as if filled."""
        return _exposure(self, with_order=False)

    @functools.cached_property
    def exposure_after(self) -> dict[str, Holding]:
        """The same, with this order filled at its price too."""
        return _exposure(self, with_order=True)


Check = Callable[[_Eval], str | None]


def _finite_positive(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _exempt(e: _Eval) -> bool:
    """The watchdog's closing orders: they must always be able to close."""
    return e.r.source in FLATTENERS and e.reducing


# --- the checks ---------------------------------------------------------------------------
def check_breaker(e: _Eval) -> str | None:
    state = e.ctx.breaker
    if state == "HALTED" and not (e.r.source in FLATTENERS and e.reducing):
        return "breaker HALTED: no new orders"
    if state == "REDUCING" and not e.reducing:
        return "breaker REDUCING: only exposure-reducing orders"
    if state not in ("ACTIVE", "REDUCING", "HALTED"):
        return f"breaker state {state!r} unknown: failing closed"
    return None


def check_connected(e: _Eval) -> str | None:
    return None if e.ctx.connected else "broker not connected and reconciled: no orders"


def check_paused(e: _Eval) -> str | None:
    if not e.ctx.paused or _exempt(e):
        return None
    return "; ".join(e.ctx.paused)


def check_watchdog(e: _Eval) -> str | None:
    if e.limits.require_watchdog and not e.ctx.watchdog_alive and not e.reducing:
        return "watchdog heartbeat stale: no new positions"
    return None


def check_market_open(e: _Eval) -> str | None:
    if e.ctx.market_open or e.r.source in FLATTENERS:
        return None
    return "market closed for this instrument (outside liquid hours)"


def check_fields(e: _Eval) -> str | None:
    r = e.r
    if r.action not in ("BUY", "SELL"):
        return f"action must be BUY or SELL, got {r.action!r}"
    if r.order_type not in ("LMT", "MKT"):
        return f"order_type must be LMT or MKT, got {r.order_type!r}"
    if not _finite_positive(r.quantity) or r.quantity != int(r.quantity):
        return f"quantity must be a positive whole number, got {r.quantity!r}"
    if r.order_type == "LMT" and not _finite_positive(r.limit_price):
        return f"limit order needs a positive finite limit_price, got {r.limit_price!r}"
    if r.tif not in ("DAY", "GTC", "IOC"):
        return f"tif must be DAY, GTC or IOC, got {r.tif!r}"
    c = r.contract
    if c.is_option and not (
        len(c.expiry) == 8
        and c.expiry.isdigit()
        and _finite_positive(c.strike)
        and c.right in ("C", "P")
    ):
        return "option order needs expiry YYYYMMDD, a positive strike and right C or P"
    return None


def check_allow_list(e: _Eval) -> str | None:
    c = e.r.contract
    if c.symbol not in e.limits.allowed_symbols and not e.reducing:
        return f"symbol {c.symbol!r} is not on the allow-list"
    if c.sec_type not in e.limits.allowed_sec_types:
        return f"security type {c.sec_type!r} is not allowed"
    return None


def check_qualified(e: _Eval) -> str | None:
    if e.ctx.qualified:
        return None
    return f"contract {e.r.key} could not be qualified at the broker (unknown or ambiguous)"


def check_blocked(e: _Eval) -> str | None:
    if e.r.key not in e.ctx.blocked or _exempt(e):
        return None
    return (
        f"contract {e.r.key} has an unresolved order intent (sent, unknown to the broker): "
        "no new orders for it until the broker reports it or a person resolves it"
    )


def check_market_data(e: _Eval) -> str | None:
    """The broker's error codes: no market data for this contract (or none at all) means no
    new orders; the watchdog's closes are exempt (they may go to market without a quote)."""
    if _exempt(e):
        return None
    if e.ctx.refuse_all is not None:
        return f"broker refuses all new orders: {e.ctx.refuse_all}"
    stock = Contract.stock(e.r.contract.symbol).key
    for key in dict.fromkeys((e.r.key, stock)):
        why = e.ctx.untradable.get(key)
        if why is not None:
            return f"{key} untradable this cycle: {why}"
    return None


_NOT_LIVE = {2: "frozen", 3: "delayed", 4: "delayed-frozen"}


def check_finite_inputs(e: _Eval) -> str | None:
    if _exempt(e):
        return None
    bad: list[str] = []
    q = e.ctx.quote
    if q is not None:
        for name in ("bid", "ask", "multiplier", "underlying_price"):
            if not _finite(getattr(q, name)):
                bad.append(f"quote.{name}={getattr(q, name)!r}")
        for name in ("age_s", "delta"):
            v = getattr(q, name)
            if v is not None and not _finite(v):
                bad.append(f"quote.{name}={v!r}")
    for key, h in e.ctx.holdings.items():
        for name in ("quantity", "mark", "multiplier", "underlying_price"):
            if not _finite(getattr(h, name)):
                bad.append(f"holding {key}.{name}={getattr(h, name)!r}")
        if h.delta is not None and not _finite(h.delta):
            bad.append(f"holding {key}.delta={h.delta!r}")
    for w in e.ctx.working:
        if not _finite(w.signed_quantity) or not _finite(w.multiplier):
            bad.append(f"working order {w.order_ref or w.key} quantity={w.signed_quantity!r}")
        if w.limit_price is not None and not _finite(w.limit_price):
            bad.append(f"working order {w.order_ref or w.key} limit={w.limit_price!r}")
    if e.ctx.daily_pnl is not None and not _finite(e.ctx.daily_pnl):
        bad.append(f"daily_pnl={e.ctx.daily_pnl!r}")
    if not _finite(e.ctx.now):
        bad.append(f"now={e.ctx.now!r}")
    if not bad:
        return None
    return "non-finite input (NaN or infinity): " + ", ".join(bad[:5])


def check_quote(e: _Eval) -> str | None:
    if e.r.source in FLATTENERS and e.reducing and e.r.order_type == "MKT":
        return None  # the watchdog's last-resort market close must not wait for a quote
    q = e.ctx.quote
    if q is None:
        return "no quote: the price collar cannot be checked"
    if not (_finite_positive(q.bid) and _finite_positive(q.ask)) or q.ask < q.bid:
        return f"quote invalid (bid {q.bid}, ask {q.ask}): the price collar cannot be checked"
    if q.age_s is None or not _finite(q.age_s):
        return "quote has no receive time: its age cannot be checked"
    if q.pre_outage:
        return "quote received before the last reconnect: stale until a fresh tick arrives"
    if q.age_s > e.limits.quote_max_age_s:
        return f"quote stale ({q.age_s:.1f}s old > {e.limits.quote_max_age_s:g}s)"
    return None


def check_price_collar(e: _Eval) -> str | None:
    q = e.ctx.quote
    if q is None or not (_finite_positive(q.bid) and _finite_positive(q.ask)):
        return None  # check_quote already refused (or the watchdog's market close)
    if not (_exempt(e) and e.r.order_type == "MKT"):  # a watchdog market close needs no price
        if q.market_data_type != 1:
            kind = _NOT_LIVE.get(q.market_data_type, f"type {q.market_data_type!r}")
            return (
                f"quote is {kind} data (marketDataType {q.market_data_type}): never used to "
                "price an order"
            )
        if q.suspect:
            return f"quote is suspect ({q.suspect}): not used to price an order"
    collar = e.limits.price_collar_pct
    mid = q.mid
    if e.r.order_type == "MKT":
        spread = (q.ask - q.bid) / mid
        if spread > collar and e.r.source not in FLATTENERS:
            return f"market order refused: spread {spread:.1%} wider than the collar {collar:.1%}"
        return None
    limit = e.r.limit_price
    if limit is None or not _finite_positive(limit):
        return None  # check_fields refuses it
    off = abs(limit - mid) / mid
    if off > collar:
        return (
            f"limit {e.r.limit_price:g} is {off:.1%} from the mid {mid:.4g} (collar {collar:.1%})"
        )
    return None


def check_max_quantity(e: _Eval) -> str | None:
    if e.r.source in FLATTENERS and e.reducing:
        return None
    if e.r.quantity > e.limits.max_order_quantity:
        return f"quantity {e.r.quantity:g} exceeds the maximum {e.limits.max_order_quantity:g}"
    return None


def check_max_notional(e: _Eval) -> str | None:
    if e.price is None or (e.r.source in FLATTENERS and e.reducing):
        return None
    notional = e.r.quantity * e.price * e.multiplier
    if notional > e.limits.max_order_notional:
        return (
            f"order value {notional:,.0f} exceeds the maximum "
            f"{e.limits.max_order_notional:,.0f} (multiplier {e.multiplier:g})"
        )
    return None


def _unit_delta_bound(contract: Contract) -> float:
    """The largest |delta| a contract can have, signed as its kind (calls +, puts -)."""
    return -1.0 if contract.is_option and contract.right == "P" else 1.0


def _exposure(e: _Eval, with_order: bool) -> dict[str, Holding]:
    """Holdings with the resting orders counted as if filled (for each contract the side
    that moves the position furthest from zero), and this order too when `with_order`."""
    q = e.ctx.quote
    resting_by: dict[str, list[WorkingOrder]] = {}
    for w in e.ctx.working:
        resting_by.setdefault(w.key, []).append(w)
    keys = set(resting_by)
    if with_order:
        keys.add(e.r.key)
    out: dict[str, Holding] = dict(e.ctx.holdings)  # contracts nothing rests on stay as held
    for key in keys:
        old = e.ctx.holdings.get(key)
        resting = resting_by.get(key, [])
        held = old.quantity if old else 0.0
        buys = sum(w.signed_quantity for w in resting if w.signed_quantity > 0)
        sells = sum(w.signed_quantity for w in resting if w.signed_quantity < 0)
        mine = key == e.r.key
        if with_order and mine:
            if e.r.signed_quantity > 0:
                buys += e.r.signed_quantity
            else:
                sells += e.r.signed_quantity
        qty = max((held + buys, held + sells), key=abs)
        limits = [w.limit_price for w in resting if w.limit_price is not None]
        if old is not None:
            out[key] = dataclasses.replace(old, quantity=qty)
        elif mine:
            out[key] = Holding(
                contract=e.r.contract,
                quantity=qty,
                mark=e.price if e.price is not None else (max(limits) if limits else 0.0),
                multiplier=e.multiplier,
                delta=q.delta if q else None,
                underlying_price=q.underlying_price if q else 0.0,
            )
        else:
            out[key] = Holding(
                contract=resting[0].contract,
                quantity=qty,
                mark=max(limits) if limits else 0.0,
                multiplier=resting[0].multiplier,
                delta=_unit_delta_bound(resting[0].contract),
                underlying_price=0.0,
            )
        if mine and e.price is not None and old is not None:  # mark this contract at the order
            out[key] = dataclasses.replace(out[key], mark=e.price)
    return out


def _after(e: _Eval) -> dict[str, Holding]:
    """Holdings after the order fills at its price, resting orders counted as if filled."""
    return e.exposure_after


def check_working_priced(e: _Eval) -> str | None:
    if e.reducing:
        return None
    unpriced = sorted(
        {
            w.order_ref or w.key
            for w in e.ctx.working
            if w.limit_price is None and w.key not in e.ctx.holdings and w.key != e.r.key
        }
    )
    if unpriced:
        return f"resting orders without a price on contracts not held: {unpriced[:3]}"
    return None


def check_deltas_known(e: _Eval) -> str | None:
    if e.reducing:
        return None
    if e.r.contract.is_option and e.ctx.quote is not None and e.ctx.quote.delta is None:
        return f"option {e.r.key} has no delta: the portfolio delta cannot be checked"
    missing = sorted(k for k, h in e.ctx.holdings.items() if h.delta is None)
    if missing:
        return f"holdings without a delta {missing[:3]}: the portfolio delta cannot be checked"
    return None


def check_position_limit(e: _Eval) -> str | None:
    if e.reducing or e.price is None:
        return None
    symbol = e.r.contract.symbol
    total = sum(h.notional for h in _after(e).values() if h.contract.symbol == symbol)
    if total > e.limits.max_position_notional:
        return (
            f"{symbol} position value after the order {total:,.0f} exceeds "
            f"{e.limits.max_position_notional:,.0f}"
        )
    return None


def check_gross_exposure(e: _Eval) -> str | None:
    if e.reducing or e.price is None:
        return None
    gross = sum(h.notional for h in _after(e).values())
    if gross > e.limits.max_gross_exposure:
        limit = e.limits.max_gross_exposure
        return f"gross exposure after the order {gross:,.0f} exceeds {limit:,.0f}"
    return None


def check_portfolio_delta(e: _Eval) -> str | None:
    if e.reducing or e.price is None:
        return None
    before = sum(h.dollar_delta for h in e.exposure_before.values())
    after = sum(h.dollar_delta for h in _after(e).values())
    if abs(after) > e.limits.max_portfolio_delta and abs(after) > abs(before):
        return (
            f"portfolio dollar delta after the order {after:,.0f} exceeds "
            f"±{e.limits.max_portfolio_delta:,.0f}"
        )
    return None


def check_open_positions(e: _Eval) -> str | None:
    if e.reducing or e.held != 0 or any(w.key == e.r.key for w in e.ctx.working):
        return None
    open_now = sum(1 for h in e.exposure_before.values() if h.quantity != 0)
    if open_now >= e.limits.max_open_positions:
        return f"{open_now} open positions: the maximum is {e.limits.max_open_positions}"
    return None


def check_daily_loss(e: _Eval) -> str | None:
    if e.reducing:
        return None
    if e.ctx.daily_pnl is None or not _finite(e.ctx.daily_pnl):
        return (
            "daily PnL unknown (not reported by the broker): the daily loss limit cannot be checked"
        )
    if e.ctx.daily_pnl <= -e.limits.max_daily_loss:
        return (
            f"daily loss {e.ctx.daily_pnl:,.0f} breaches the limit -{e.limits.max_daily_loss:,.0f}"
        )
    return None


def check_order_rate(e: _Eval) -> str | None:
    if e.r.source in FLATTENERS and e.reducing:
        return None
    now = e.ctx.now
    sent = e.state.sent
    while sent and now - sent[0] > 86_400:
        sent.popleft()
    last_s = sum(1 for t in reversed(sent) if now - t < 1.0)
    if last_s >= e.limits.max_orders_per_second:
        return (
            f"order rate: {last_s} sent in the last second (max {e.limits.max_orders_per_second})"
        )
    last_m = sum(1 for t in reversed(sent) if now - t < 60.0)
    if last_m >= e.limits.max_orders_per_minute:
        return (
            f"order rate: {last_m} sent in the last minute (max {e.limits.max_orders_per_minute})"
        )
    today = e.state.sent_today if e.state.day == e.day else 0
    if today >= e.limits.max_orders_per_day:
        return f"order rate: {today} sent today (max {e.limits.max_orders_per_day})"
    return None


def check_execution_throttle(e: _Eval) -> str | None:
    if e.state.execution_throttle_latched and not e.reducing:
        return (
            f"repeated-execution throttle latched ({e.limits.max_executions_per_window} in "
            f"{e.limits.execution_window_s:g}s): a person must re-enable trading"
        )
    return None


def check_duplicate(e: _Eval) -> str | None:
    if e.r.source in FLATTENERS:
        return None
    when = e.state.recent.get((e.r.key, e.r.action, e.r.quantity))
    if when is not None and e.ctx.now - when < e.limits.duplicate_window_s:
        return (
            f"duplicate: {e.r.action} {e.r.quantity:g} {e.r.key} was sent "
            f"{e.ctx.now - when:.1f}s ago (window {e.limits.duplicate_window_s:g}s)"
        )
    return None


CHECKS: tuple[Check, ...] = (
    check_breaker,
    check_connected,
    check_paused,
    check_fields,
    check_allow_list,
    check_qualified,
    check_blocked,
    check_market_data,
    check_watchdog,
    check_market_open,
    check_finite_inputs,
    check_quote,
    check_price_collar,
    check_max_quantity,
    check_max_notional,
    check_working_priced,
    check_deltas_known,
    check_position_limit,
    check_gross_exposure,
    check_portfolio_delta,
    check_open_positions,
    check_daily_loss,
    check_order_rate,
    check_execution_throttle,
    check_duplicate,
)


def _prepare(
    r: OrderRequest, ctx: GateContext, state: GateState, limits: RiskConfig, day: str
) -> _Eval:
    holding = ctx.holdings.get(r.key)
    held = holding.quantity if holding else 0.0
    if not _finite(held):
        held = 0.0  # check_finite_inputs refuses; nothing counts as reducing a NaN
    signed = r.signed_quantity if _finite_positive(r.quantity) else 0.0
    # Orders already resting on this contract that reduce the position could all fill first:
    # together with this one they must not flip it. (The watchdog's closes judge holdings
    # alone: it cancels everything before it closes, and re-checks flat after.)
    resting = 0.0
    if r.source not in FLATTENERS and held != 0:
        resting = sum(
            abs(w.signed_quantity)
            for w in ctx.working
            if w.key == r.key
            and _finite(w.signed_quantity)
            and (w.signed_quantity > 0) != (held > 0)
        )
    reducing = (
        held != 0
        and signed != 0
        and (held > 0) != (signed > 0)
        and abs(signed) + resting <= abs(held)
    )
    price: float | None
    if r.order_type == "LMT" and _finite_positive(r.limit_price):
        price = r.limit_price
    elif (
        ctx.quote is not None
        and _finite_positive(ctx.quote.ask)
        and _finite_positive(ctx.quote.bid)
    ):
        price = ctx.quote.ask if r.action == "BUY" else ctx.quote.bid
    else:
        price = None
    return _Eval(r, ctx, state, limits, day, held, reducing, price)


def evaluate(
    request: OrderRequest, ctx: GateContext, state: GateState, limits: RiskConfig, day: str = ""
) -> list[str]:
    """Run every check; return all the reasons for refusal (empty: the order may go)."""
    return [reason for _, reason in evaluate_named(request, ctx, state, limits, day)]


def evaluate_named(
    request: OrderRequest, ctx: GateContext, state: GateState, limits: RiskConfig, day: str = ""
) -> list[tuple[str, str]]:
    """Run every check; return (check name, reason) for each refusal (`replay` counts them
    by check). The name is the check function's without its `check_` prefix."""
    try:
        e = _prepare(request, ctx, state, limits, day)
    except Exception as exc:
        return [
            (
                "prepare",
                f"request could not be evaluated ({type(exc).__name__}: {exc}): failing closed",
            )
        ]
    out: list[tuple[str, str]] = []
    for check in CHECKS:
        try:
            reason = check(e)
        except Exception as exc:  # a broken check refuses; it never lets an order through
            reason = f"{check.__name__} failed ({type(exc).__name__}: {exc}): failing closed"
        if reason is not None:
            out.append((check.__name__.removeprefix("check_"), reason))
    return out


def order_ref_for(r: OrderRequest) -> str:
    """A deterministic orderRef: the same request in the same cycle gets the same ref."""
    material = "|".join(
        str(x)
        for x in (
            r.source,
            r.cycle_id,
            r.decision_id,
            r.key,
            r.action,
            r.quantity,
            r.order_type,
            r.limit_price,
            r.tif,
            r.ref_seed,
        )
    )
    digest = hashlib.sha256(material.encode()).hexdigest()[:12]
    prefix = _REF_PREFIX.get(r.source, r.source[:6])
    cycle = f"c{r.cycle_id}" if r.cycle_id is not None else "x"
    return f"{prefix}-{cycle}-{digest}"


def is_flattener_ref(order_ref: str | None) -> bool:
    """An orderRef of the kill switch's closing orders (the watchdog's `wd-`, the panic
    command's `panic-`): ours while HALTED, never a stray order to cancel."""
    return bool(order_ref) and any(
        str(order_ref).startswith(f"{_REF_PREFIX[s]}-") for s in FLATTENERS
    )


async def place_order_with_guard(
    request: OrderRequest,
    ctx: GateContext,
    state: GateState,
    limits: RiskConfig,
    store: Store,
    submitter: Submitter,
    day: str = "",
    intent_timeout_s: float = 5.0,
    clock: Callable[[], float] | None = None,
) -> GateVerdict:
    """Check, store the intent (awaited: no order without a stored intent), then submit.
    The only path from a decision to placeOrder."""
    reasons = evaluate(request, ctx, state, limits, day)
    order_ref = order_ref_for(request)
    if not reasons:
        intent = {**intent_row(request), "order_ref": order_ref}
        try:
            if not await store.run(insert_intent, intent, timeout=intent_timeout_s):
                reasons = [f"duplicate orderRef {order_ref}: this intent was already recorded"]
        except StorageUnavailable as exc:
            reasons = [f"intent could not be stored ({exc}): no order without a stored intent"]
            # if the insert lands after all, it must not look like a live order
            store.post(
                update_intent,
                order_ref,
                status=IntentStatus.NOT_SENT,
                last_error="intent stored too late: the order was never sent",
            )
    if reasons:
        _refusal(store, request, order_ref, reasons)
        return GateVerdict(False, order_ref, tuple(reasons))
    try:
        broker_id = submitter.submit(order_ref, request)
    except Exception as exc:  # not sent: the intent says so, and nothing is retried blindly
        reason = f"broker did not accept the order for sending: {type(exc).__name__}: {exc}"
        store.post(update_intent, order_ref, status=IntentStatus.NOT_SENT, last_error=reason)
        _refusal(store, request, order_ref, [reason])
        return GateVerdict(False, order_ref, (reason,))
    # counted at the moment it went out (after the awaited intent), not when the view was
    # built: the rate windows see real send times
    state.record_sent(request, clock() if clock is not None else ctx.now, day)
    store.post(update_intent, order_ref, status=IntentStatus.SUBMITTED, broker_order_id=broker_id)
    return GateVerdict(True, order_ref, (), broker_id)


def intent_row(r: OrderRequest) -> dict[str, object]:
    """The stored intent of a request (without its orderRef)."""
    row: dict[str, object] = {
        "cycle_id": r.cycle_id,
        "decision_id": r.decision_id,
        "source": r.source,
        "contract": r.contract,
        "action": r.action,
        "quantity": r.quantity,
        "order_type": r.order_type,
        "limit_price": r.limit_price,
        "tif": r.tif,
    }
    if r.parent_ref or r.aux_price is not None:
        row["aux_price"] = r.aux_price
        row["parent_ref"] = r.parent_ref or None
    return row


def refuse(store: Store, r: OrderRequest, order_ref: str, reasons: list[str]) -> None:
    """Record a refusal (a safety event with every reason) and log it."""
    _refusal(store, r, order_ref, reasons)


def _refusal(store: Store, r: OrderRequest, order_ref: str, reasons: list[str]) -> None:
    log.warning(
        "gate refused %s %g %s (%s) ref=%s: %s",
        r.action,
        r.quantity,
        r.key,
        r.source,
        order_ref,
        "; ".join(reasons),
    )
    store.post(
        log_safety_event,
        "gate",
        "gate_refusal",
        "; ".join(reasons),
        "warning",
        details={
            "reasons": reasons,
            "request": {
                "symbol": r.contract.symbol,
                "sec_type": r.contract.sec_type,
                "action": r.action,
                "quantity": r.quantity,
                "order_type": r.order_type,
                "limit_price": r.limit_price,
                "expiry": r.contract.expiry,
                "strike": r.contract.strike,
                "right": r.contract.right,
                "source": r.source,
            },
        },
        order_ref=order_ref,
        cycle_id=r.cycle_id,
    )
