"""Protective orders held at the broker: a position-opening order and its bracket children.

An opening order (the parent) carries a stop-loss (STP, GTC) and optionally a take-profit
(LMT, GTC) on the other side, in one OCA group (ocaType 1), children of the parent at IB
(`parentId`): IB holds them until the parent fills, so the position is never at the broker
without its stop, and one child filling cancels the other. Each child is its own intent with an
orderRef derived from the parent's (`<parent>-sl`, `<parent>-tp`), stored before anything is
sent and reconciled like any order.

`bracket_reasons()` is the gate's check of the whole bracket: each child's price against the
parent's fill reference price (the collar), quantities equal to the parent's, children only
reducing the position the parent leaves, the stop on the losing side of the entry, the
take-profit on the winning side, the stop further from the entry than the quoted bid/ask
spread (a stop inside it triggers as soon as the entry fills). `place_bracket_with_guard()`
sends nothing unless the parent passes every check of `execution_gate.evaluate()` and the
bracket passes these.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from data_lake import IntentStatus, StorageUnavailable, Store, insert_intent, update_intent

from .execution_gate import (
    GateContext,
    GateState,
    GateVerdict,
    OrderRequest,
    Quote,
    evaluate,
    intent_row,
    order_ref_for,
    refuse,
)
from .risk import RiskConfig

__all__ = [
    "STOP_SUFFIX",
    "TAKE_PROFIT_SUFFIX",
    "Bracket",
    "BracketSubmitter",
    "Protection",
    "bracket_reasons",
    "child_ref",
    "is_protective_ref",
    "parent_ref_of",
    "place_bracket_with_guard",
    "protective_children",
    "reference_price",
    "store_and_send",
    "with_children",
]

STOP_SUFFIX = "-sl"
TAKE_PROFIT_SUFFIX = "-tp"


@dataclass(frozen=True, slots=True, kw_only=True)
class Protection:
    """How far from the entry the protective children sit (fractions of the entry price)."""

    stop_loss_pct: float
    take_profit_pct: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Bracket:
    """A parent order and its protective children (the stop first)."""

    parent: OrderRequest
    children: tuple[OrderRequest, ...]
    reference_price: float  # the price the parent is expected to fill at (the collar's anchor)


class BracketSubmitter(Protocol):
    def submit_bracket(
        self, parent_ref: str, parent: OrderRequest, children: Sequence[tuple[str, OrderRequest]]
    ) -> dict[str, int]:
        """Send the parent and its children (transmit on the last); return order id by ref;
        raise if nothing was sent."""
        ...


def child_ref(parent_ref: str, suffix: str) -> str:
    return parent_ref + suffix


def is_protective_ref(ref: str | None) -> bool:
    """True for the orderRef of a protective child (`<parent>-sl` / `<parent>-tp`)."""
    return bool(ref) and str(ref).endswith((STOP_SUFFIX, TAKE_PROFIT_SUFFIX))


def parent_ref_of(ref: str) -> str:
    return ref[: -len(STOP_SUFFIX)] if is_protective_ref(ref) else ref


def reference_price(parent: OrderRequest, bid: float | None, ask: float | None) -> float | None:
    """The price the parent is expected to fill at: its limit, else the touch it would take."""
    if parent.order_type == "LMT" and _positive(parent.limit_price):
        return parent.limit_price
    touch = ask if parent.action == "BUY" else bid
    return touch if _positive(touch) else None


def _positive(x: float | None) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _tick(price: float, up: bool) -> float:
    """Round to a cent, away from the entry (a stop never tighter than asked)."""
    cents = price * 100
    return (math.ceil(cents - 1e-9) if up else math.floor(cents + 1e-9)) / 100


def protective_children(
    parent: OrderRequest, ref_price: float, protection: Protection
) -> tuple[OrderRequest, ...]:
    """Build the stop (and take-profit) for an opening parent: opposite side, same quantity,
    GTC, orderRefs derived from the parent's."""
    pref = order_ref_for(parent)
    back = "SELL" if parent.action == "BUY" else "BUY"
    long = parent.action == "BUY"
    base = dataclasses.replace(parent, action=back, tif="GTC", parent_ref=pref)
    sl = protection.stop_loss_pct
    stop_price = _tick(ref_price * (1 - sl if long else 1 + sl), up=not long)
    out = [
        dataclasses.replace(
            base, order_type="STP", limit_price=None, aux_price=stop_price, ref_seed=STOP_SUFFIX
        )
    ]
    tp = protection.take_profit_pct
    if tp is not None:
        limit = _tick(ref_price * (1 + tp if long else 1 - tp), up=long)
        out.append(
            dataclasses.replace(
                base, order_type="LMT", limit_price=limit, ref_seed=TAKE_PROFIT_SUFFIX
            )
        )
    return tuple(out)


def _child_price(c: OrderRequest) -> float | None:
    return c.aux_price if c.order_type == "STP" else c.limit_price


def _check_child(b: Bracket, c: OrderRequest, held_after: float, limits: RiskConfig) -> list[str]:
    p, ref = b.parent, b.reference_price
    name = f"{'stop' if c.order_type == 'STP' else 'take-profit'} {c.action} {c.quantity:g}"
    out: list[str] = []
    if c.key != p.key:
        out.append(f"{name}: contract {c.key} is not the parent's {p.key}")
    if c.action == p.action or c.action not in ("BUY", "SELL"):
        out.append(f"{name}: must be on the opposite side of the parent ({p.action})")
    if c.quantity != p.quantity:
        out.append(f"{name}: quantity must equal the parent's {p.quantity:g}")
    long_after = held_after > 0
    if held_after == 0 or (c.action == "BUY") == long_after or c.quantity > abs(held_after):
        out.append(
            f"{name}: must only reduce the position the parent leaves ({held_after:g}), "
            "never extend or flip it"
        )
    if c.tif != "GTC":
        out.append(f"{name}: must be GTC (it protects the position between sessions)")
    if c.parent_ref != order_ref_for(p):
        out.append(f"{name}: parent_ref {c.parent_ref!r} is not the parent's orderRef")
    price = _child_price(c)
    if price is None or not _positive(price):
        out.append(f"{name}: needs a positive finite price")
        return out
    off = abs(price - ref) / ref
    if off > limits.protective_collar_pct:
        out.append(
            f"{name}: price {price:g} is {off:.1%} from the parent's reference {ref:g} "
            f"(protective collar {limits.protective_collar_pct:.1%})"
        )
    losing = price < ref if p.action == "BUY" else price > ref
    if c.order_type == "STP" and not losing:
        out.append(f"{name}: stop {price:g} is not on the losing side of the entry {ref:g}")
    if c.order_type == "LMT" and losing:
        out.append(f"{name}: take-profit {price:g} is not on the winning side of the entry {ref:g}")
    return out


def _stop_clear_of_spread(b: Bracket, c: OrderRequest, quote: Quote | None) -> list[str]:
    """A stop no further from the entry than the quoted spread triggers as soon as the entry
    fills: a buy fills when the ask comes down to its limit, which puts the bid (a sell stop's
    trigger) a spread lower; a sell fills when the bid reaches it, the ask (a buy stop's
    trigger) a spread higher. Wide spreads (options) make a tight `stop_loss_pct` exactly that:
    a round trip through the spread, a certain loss. No quote: the parent's own checks refuse."""
    price = c.aux_price
    if quote is None or not (_positive(quote.bid) and _positive(quote.ask)) or price is None:
        return []
    spread = quote.ask - quote.bid
    gap = abs(price - b.reference_price)
    if spread <= 0 or gap > spread + 1e-9:
        return []
    return [
        f"stop {c.action} {c.quantity:g}: stop {price:g} is {gap:.2f} from the entry "
        f"{b.reference_price:g}, not beyond the quoted spread {spread:.2f} (bid {quote.bid:g}, "
        f"ask {quote.ask:g}): it would trigger as soon as the entry fills; the stop_loss_pct "
        "for this contract must be wider than its spread"
    ]


def bracket_reasons(b: Bracket, ctx: GateContext, limits: RiskConfig) -> list[str]:
    """Every reason the bracket as a whole may not go (empty: it may)."""
    out: list[str] = []
    if not _positive(b.reference_price):
        return [f"bracket: no fill reference price for the parent ({b.reference_price!r})"]
    stops = [c for c in b.children if c.order_type == "STP"]
    others = [c for c in b.children if c.order_type not in ("STP", "LMT")]
    if len(stops) != 1:
        out.append(f"bracket: must carry exactly one stop (STP), has {len(stops)}")
    if len(b.children) - len(stops) > 1 or others:
        out.append("bracket: at most one take-profit (LMT) besides the stop; no other types")
    for c in b.children:
        want = STOP_SUFFIX if c.order_type == "STP" else TAKE_PROFIT_SUFFIX
        if c.ref_seed != want:
            out.append(f"bracket: a {c.order_type} child's orderRef suffix must be {want!r}")
    out += [r for c in stops for r in _stop_clear_of_spread(b, c, ctx.quote)]
    holding = ctx.holdings.get(b.parent.key)
    held = holding.quantity if holding else 0.0
    if held != 0 and (held > 0) != (b.parent.action == "BUY"):
        out.append("bracket: only a position-opening (or increasing) order carries protection")
    held_after = held + b.parent.signed_quantity
    # the children protect the parent's quantity only: what was held before keeps its own
    for c in b.children:
        out += _check_child(b, c, held_after, limits)
    return out


async def place_bracket_with_guard(
    bracket: Bracket,
    ctx: GateContext,
    state: GateState,
    limits: RiskConfig,
    store: Store,
    submitter: BracketSubmitter,
    day: str = "",
    intent_timeout_s: float = 5.0,
    clock: Callable[[], float] | None = None,
) -> GateVerdict:
    """Check the parent (every gate check) and the bracket; store every intent (awaited);
    then send the parent and its children together. Nothing goes unless all of it may."""
    parent = bracket.parent
    parent_ref = order_ref_for(parent)
    reasons = evaluate(parent, ctx, state, limits, day) + bracket_reasons(bracket, ctx, limits)
    children = [(child_ref(parent_ref, c.ref_seed), c) for c in bracket.children]
    verdict = await store_and_send(
        [(parent_ref, parent), *children],
        reasons,
        lambda: submitter.submit_bracket(parent_ref, parent, children),
        store,
        what="bracket",
        intent_timeout_s=intent_timeout_s,
    )
    if not verdict.accepted:
        return verdict
    now = clock() if clock is not None else ctx.now
    state.record_sent(parent, now, day)
    for _ref, c in children:
        state.record_sent(c, now, day, duplicate_guard=False)
    return verdict


async def store_and_send(
    rows: Sequence[tuple[str, OrderRequest]],
    reasons: list[str],
    send: Callable[[], dict[str, int]],
    store: Store,
    *,
    what: str,
    intent_timeout_s: float,
) -> GateVerdict:
    """Orders that go together: with no `reasons`, store every intent (awaited), then
    `send` them all at once; a refusal (given, or a storage failure, or the broker not
    taking them) is recorded against the first row and leaves none of them live. The
    verdict names the first row and lists the others as its children."""
    head_ref, head = rows[0]
    stored: list[str] = []
    if not reasons:
        try:
            for ref, r in rows:
                if not await store.run(
                    insert_intent, {**intent_row(r), "order_ref": ref}, timeout=intent_timeout_s
                ):
                    reasons = [f"duplicate orderRef {ref}: this intent was already recorded"]
                    break
                stored.append(ref)
        except StorageUnavailable as exc:
            reasons = [f"intent could not be stored ({exc}): no order without a stored intent"]
            stored = [ref for ref, _ in rows]  # any of them may land late: none is live
    if reasons:
        for ref in stored:
            store.post(
                update_intent,
                ref,
                status=IntentStatus.NOT_SENT,
                last_error=f"{what} refused or not stored whole: never sent",
            )
        refuse(store, head, head_ref, reasons)
        return GateVerdict(False, head_ref, tuple(reasons))
    try:
        ids = send()
    except Exception as exc:  # nothing transmitted: IB holds a bracket until its last child
        reason = f"broker did not accept the {what} for sending: {type(exc).__name__}: {exc}"
        for ref, _ in rows:
            store.post(update_intent, ref, status=IntentStatus.NOT_SENT, last_error=reason)
        refuse(store, head, head_ref, [reason])
        return GateVerdict(False, head_ref, (reason,))
    for ref, _ in rows:
        store.post(update_intent, ref, status=IntentStatus.SUBMITTED, broker_order_id=ids.get(ref))
    return GateVerdict(True, head_ref, (), ids.get(head_ref), tuple(ref for ref, _ in rows[1:]))


def with_children(parent: OrderRequest, ref_price: float, protection: Protection) -> Bracket:
    """The bracket the commander sends for an opening order."""
    return Bracket(
        parent=parent,
        children=protective_children(parent, ref_price, protection),
        reference_price=ref_price,
    )
