"""Keeping every position covered by its protective orders, whatever happened to them.

A bracket (skills.brackets) protects the quantity its parent fills, once the parent has filled
whole. Everything else that can leave a position with less (or more) than its stop is judged
here, deterministically, from what the broker shows:

- a parent that filled in part and still works: its children are held until it fills whole,
  so the filled part has no stop. Its remainder is cancelled (`CancelRemainder`); the filled
  part is then covered like any uncovered quantity.
- uncovered quantity (a partly filled parent cancelled, a stop the broker rejected while no
  process of ours ran, a position opened elsewhere): a stop (and take-profit) for exactly the
  uncovered quantity, in its own OCA group (`Protect`), at the price of the stop already
  guarding the position if there is one, else `stop_loss_pct` from the position's average
  cost. When the market is already through that price the stop would fire at once: the
  uncovered quantity is closed instead (`Close`).
- more protection than position (a person closed part of it elsewhere; a stop larger than
  what is left): a stop that fires would flip the position. Every protective order on the
  contract is cancelled and the position covered again, exactly (`Replace`); on a flat
  contract they are only cancelled.

`plan_cover()` returns the steps; `cover_reasons()` is the gate's check of a standalone
protective order (the execution gate's `evaluate()` takes LMT/MKT only). Nothing here sends.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from data_lake import Contract, Store

from .brackets import (
    STOP_SUFFIX,
    TAKE_PROFIT_SUFFIX,
    Protection,
    is_protective_ref,
    parent_ref_of,
    store_and_send,
)
from .execution_gate import GateState, GateVerdict, OrderRequest, WorkingOrder, order_ref_for

__all__ = [
    "CancelRemainder",
    "Close",
    "CoverInputs",
    "CoverSubmitter",
    "Covered",
    "Protect",
    "Replace",
    "Step",
    "cover_reasons",
    "cover_requests",
    "cover_rest",
    "place_cover_with_guard",
    "plan_cover",
    "step_doc",
    "stop_price",
]

EPS = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class Covered:
    """One position as the keeper sees it (quantity signed, prices per unit)."""

    contract: Contract
    quantity: float
    avg_price: float  # the broker's average cost per unit (avgCost / multiplier)
    mark: float  # the latest mid (or the average cost when no quote is there)

    @property
    def key(self) -> str:
        return self.contract.key


@dataclass(frozen=True, slots=True)
class CancelRemainder:
    parent_ref: str
    why: str


@dataclass(frozen=True, slots=True)
class Protect:
    contract: Contract
    action: str  # the reducing side
    quantity: float
    stop: float
    take_profit: float | None
    why: str


@dataclass(frozen=True, slots=True)
class Close:
    contract: Contract
    action: str
    quantity: float
    why: str


@dataclass(frozen=True, slots=True)
class Replace:
    """Cancel these protective orders; then cover `protect` (None: the contract is flat)."""

    cancel: tuple[str, ...]
    protect: Protect | Close | None
    why: str


Step = CancelRemainder | Protect | Close | Replace


def _tick(price: float, up: bool) -> float:
    cents = price * 100
    return (math.ceil(cents - 1e-9) if up else math.floor(cents + 1e-9)) / 100


def stop_price(avg_price: float, long: bool, protection: Protection) -> float:
    """`stop_loss_pct` from the average cost, rounded to a cent away from it."""
    sl = protection.stop_loss_pct
    return _tick(avg_price * (1 - sl if long else 1 + sl), up=not long)


def _take_profit(avg_price: float, long: bool, protection: Protection) -> float | None:
    tp = protection.take_profit_pct
    if tp is None:
        return None
    return _tick(avg_price * (1 + tp if long else 1 - tp), up=long)


def _tightest(
    prices: Sequence[float | None], *, highest: bool, default: float | None = None
) -> float | None:
    """The tightest of the known prices (the highest stop of a long position, the lowest
    take-profit), else `default`."""
    known = [p for p in prices if p]
    if not known:
        return default
    return max(known) if highest else min(known)


def _reducing(w: WorkingOrder, long: bool) -> bool:
    return (w.signed_quantity < 0) == long


def plan_cover(
    positions: Sequence[Covered],
    working: Sequence[WorkingOrder],
    filled: Mapping[str, float],
    protection: Protection | None,
    *,
    ours: frozenset[str],
    skip: frozenset[str] = frozenset(),
) -> list[Step]:
    """The steps that leave every position covered exactly by its protective orders.

    `working`: every order resting at the broker; `filled`: how much of each working order of
    ours has filled; `ours`: the orderRefs of this session's working orders (only those can be
    cancelled); `skip`: contract keys another path is acting on now. Uncovered quantity is only
    protected when `protection` is configured; too much protection is always trimmed."""
    steps: list[Step] = []
    refs = {w.order_ref for w in working}
    held = {p.key: p for p in positions if abs(p.quantity) > EPS}
    keys = sorted({*held, *(w.key for w in working if is_protective_ref(w.order_ref))})
    for key in keys:
        if key in skip:
            continue
        on_key = [w for w in working if w.key == key]
        guards = [w for w in on_key if is_protective_ref(w.order_ref)]
        # held children: their parent still works (it has not filled whole)
        active = [w for w in guards if parent_ref_of(w.order_ref) not in refs]
        # our other working orders here (a person's resting order does not hold us back)
        others = [w for w in on_key if not is_protective_ref(w.order_ref) and w.order_ref in ours]
        partial = [
            w
            for w in others
            if filled.get(w.order_ref, 0.0) > EPS and w.order_ref + STOP_SUFFIX in refs
        ]
        if partial:
            for w in partial:
                steps.append(
                    CancelRemainder(
                        w.order_ref,
                        f"{key}: parent {w.order_ref} filled {filled[w.order_ref]:g} and still "
                        f"works for {abs(w.signed_quantity):g}; its stop waits for the whole "
                        "fill, so the remainder is cancelled and the filled part protected",
                    )
                )
            continue
        if others:
            continue  # an order of ours is working here: judged once it is done
        pos = held.get(key)
        if pos is None:
            mine = tuple(w.order_ref for w in active if w.order_ref in ours)
            if mine:
                steps.append(Replace(mine, None, f"{key}: flat, yet protective orders still work"))
            continue
        long = pos.quantity > 0
        size = abs(pos.quantity)
        stops = [w for w in active if _reducing(w, long) and w.order_ref.endswith(STOP_SUFFIX)]
        tps = [w for w in active if _reducing(w, long) and w.order_ref.endswith(TAKE_PROFIT_SUFFIX)]
        wrong = [w for w in active if not _reducing(w, long)]
        stopped = sum(abs(w.signed_quantity) for w in stops)
        profit = sum(abs(w.signed_quantity) for w in tps)
        back = "SELL" if long else "BUY"
        if wrong or stopped > size + EPS or profit > size + EPS:
            mine = tuple(w.order_ref for w in active if w.order_ref in ours)
            if not mine:
                continue  # another client's orders: only their owner can cancel them
            why = (
                f"{key}: protective orders cover {stopped:g} (stop) / {profit:g} "
                f"(take-profit) of a position of {pos.quantity:g}"
                + (" and some would extend it" if wrong else "")
                + ": replaced by orders for exactly the position"
            )
            cover = _cover(pos, size, stops, tps, protection, why, tp_room=size)
            steps.append(Replace(mine, cover, why))
            continue
        uncovered = size - stopped
        if uncovered <= EPS or protection is None:
            continue
        why = f"{key}: {uncovered:g} of a position of {pos.quantity:g} has no stop"
        steps.append(
            _cover(pos, uncovered, stops, tps, protection, why, tp_room=size - profit)
            or Close(pos.contract, back, uncovered, why + " and no stop price is known: closed")
        )
    return steps


def _cover(
    pos: Covered,
    quantity: float,
    stops: Sequence[WorkingOrder],
    tps: Sequence[WorkingOrder],
    protection: Protection | None,
    why: str,
    *,
    tp_room: float,
) -> Protect | Close | None:
    """A stop for `quantity` at the tightest stop already guarding the position (else from
    the average cost); a close when the market is through that price already."""
    long = pos.quantity > 0
    back = "SELL" if long else "BUY"
    anchor = pos.avg_price if pos.avg_price > 0 else pos.mark  # no average cost: the mark
    priced = protection is not None and anchor > 0
    stop = _tightest(
        [w.limit_price for w in stops],
        highest=long,
        default=stop_price(anchor, long, protection) if protection and priced else None,
    )
    if stop is None:
        return None
    if (pos.mark <= stop) if long else (pos.mark >= stop):
        return Close(
            pos.contract,
            back,
            quantity,
            f"{why}; the market ({pos.mark:g}) is through its stop {stop:g}: closed instead",
        )
    tp = _tightest(
        [w.limit_price for w in tps],
        highest=not long,
        default=_take_profit(anchor, long, protection) if protection and priced else None,
    )
    if tp is not None and ((pos.mark >= tp) if long else (pos.mark <= tp)):
        tp = None  # a take-profit already through the market would fill at once: stop only
    if quantity > tp_room + EPS:
        tp = None  # the take-profits working already cover what a new one would add
    return Protect(pos.contract, back, quantity, stop, tp, why)


def cover_requests(
    step: Protect, cycle_id: int | None, nonce: str = ""
) -> tuple[str, tuple[OrderRequest, ...]]:
    """The group orderRef and the standalone protective orders (GTC stop, optional
    take-profit) of a `Protect` step; their orderRefs are `<group>-sl` / `<group>-tp`.
    `nonce` tells apart passes that plan the same step (the keeper's pass number)."""
    stop = OrderRequest(
        contract=step.contract,
        action=step.action,
        quantity=step.quantity,
        order_type="STP",
        tif="GTC",
        source="commander",
        cycle_id=cycle_id,
        aux_price=step.stop,
        ref_seed=STOP_SUFFIX,
    )
    group = order_ref_for(
        dataclasses.replace(stop, ref_seed=f"cover {step.stop:g} {step.take_profit} {nonce}")
    )
    if step.take_profit is None:
        return group, (stop,)
    take = dataclasses.replace(
        stop,
        order_type="LMT",
        aux_price=None,
        limit_price=step.take_profit,
        ref_seed=TAKE_PROFIT_SUFFIX,
    )
    return group, (stop, take)


def cover_reasons(
    orders: Sequence[OrderRequest],
    position: Covered,
    working: Sequence[WorkingOrder],
    *,
    breaker: str,
    connected: bool,
    collar_pct: float,
) -> list[str]:
    """Every reason these standalone protective orders may not go (empty: they may): they
    only reduce the position (together with what already guards it, never more than it),
    GTC, a positive finite price on the right side of the market and within the protective
    collar of the average cost."""
    out: list[str] = []
    if breaker == "HALTED":
        out.append("breaker HALTED: the watchdog closes positions; no protective order now")
    if not connected:
        out.append("broker not connected")
    size = abs(position.quantity)
    long = position.quantity > 0
    if size <= EPS:
        return [*out, f"{position.key}: no position to protect"]
    refs = {w.order_ref for w in working}
    active = [
        w
        for w in working
        if w.key == position.key
        and is_protective_ref(w.order_ref)
        and parent_ref_of(w.order_ref) not in refs
    ]
    for kind, suffix in (("STP", STOP_SUFFIX), ("LMT", TAKE_PROFIT_SUFFIX)):
        mine = [o for o in orders if o.order_type == kind]
        already = sum(abs(w.signed_quantity) for w in active if w.order_ref.endswith(suffix))
        if sum(o.quantity for o in mine) + already > size + EPS:
            out.append(
                f"{kind}: {sum(o.quantity for o in mine):g} more beside {already:g} working "
                f"would exceed the position of {position.quantity:g}"
            )
    for o in orders:
        name = f"{'stop' if o.order_type == 'STP' else 'take-profit'} {o.action} {o.quantity:g}"
        price = o.aux_price if o.order_type == "STP" else o.limit_price
        if o.key != position.key:
            out.append(f"{name}: contract {o.key} is not the position's {position.key}")
        if (o.action == "SELL") != long or o.order_type not in ("STP", "LMT"):
            out.append(f"{name}: must be a STP or LMT on the reducing side")
        if o.tif != "GTC":
            out.append(f"{name}: must be GTC")
        if not (o.quantity > 0 and math.isfinite(o.quantity)):
            out.append(f"{name}: quantity must be positive")
        if price is None or not math.isfinite(price) or price <= 0:
            out.append(f"{name}: needs a positive finite price")
            continue
        ref = position.avg_price
        if ref > 0 and abs(price - ref) / ref > collar_pct:
            out.append(
                f"{name}: price {price:g} is {abs(price - ref) / ref:.1%} from the average "
                f"cost {ref:g} (protective collar {collar_pct:.1%})"
            )
        above = price > position.mark
        if o.order_type == "STP" and above == long:
            out.append(f"{name}: stop {price:g} is through the market {position.mark:g}")
        if o.order_type == "LMT" and above != long:
            out.append(
                f"{name}: take-profit {price:g} is not on the winning side of the market "
                f"{position.mark:g}"
            )
    return out


class CoverSubmitter(Protocol):
    def submit_cover(
        self, group_ref: str, orders: Sequence[tuple[str, OrderRequest]]
    ) -> dict[str, int]:
        """Send standalone protective orders in one OCA group; return order id by ref; raise
        if nothing was sent."""
        ...


async def place_cover_with_guard(
    step: Protect,
    position: Covered,
    working: Sequence[WorkingOrder],
    *,
    breaker: str,
    connected: bool,
    collar_pct: float,
    state: GateState,
    store: Store,
    submitter: CoverSubmitter,
    cycle_id: int | None,
    now: float,
    day: str = "",
    intent_timeout_s: float = 5.0,
    nonce: str = "",
) -> GateVerdict:
    """Check the protective orders of a `Protect` step (`cover_reasons`), store their intents
    (awaited), then send them together; a refusal is recorded like any other."""
    group, orders = cover_requests(step, cycle_id, nonce)
    rows = [(group + o.ref_seed, o) for o in orders]
    reasons = cover_reasons(
        orders, position, working, breaker=breaker, connected=connected, collar_pct=collar_pct
    )
    verdict = await store_and_send(
        rows,
        reasons,
        lambda: submitter.submit_cover(group, rows),
        store,
        what="protective order",
        intent_timeout_s=intent_timeout_s,
    )
    if verdict.accepted:
        for _ref, o in rows:  # the rate windows count them; the duplicate guard does not
            state.record_sent(o, now, day, duplicate_guard=False)
    return verdict


def cover_rest(
    close: OrderRequest, held: float, working: Sequence[WorkingOrder], lifted: Sequence[str]
) -> Protect | None:
    """After the protective orders `lifted` were cancelled for a partial close, the stop (and
    take-profit) for what the close leaves, at their prices (None: nothing is left, or no stop
    price was lifted)."""
    left = abs(held) - close.quantity
    if left <= EPS:
        return None
    long = held > 0
    mine = [w for w in working if w.order_ref in lifted]
    stop = _tightest(
        [w.limit_price for w in mine if w.order_ref.endswith(STOP_SUFFIX)], highest=long
    )
    if stop is None:
        return None
    return Protect(
        close.contract,
        "SELL" if long else "BUY",
        left,
        stop,
        _tightest(
            [w.limit_price for w in mine if w.order_ref.endswith(TAKE_PROFIT_SUFFIX)],
            highest=not long,
        ),
        f"{close.key}: a partial close ({close.quantity:g} of {held:g}) leaves {left:g}, "
        "covered again at the lifted prices",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CoverInputs:
    """Everything `plan_cover` reads, as recorded in a cycle's snapshot (for replay)."""

    positions: tuple[Covered, ...]
    working: tuple[WorkingOrder, ...]
    filled: Mapping[str, float]
    ours: frozenset[str]
    skip: frozenset[str]
    protection: Protection | None

    def plan(self, protection: Protection | None) -> list[Step]:
        return plan_cover(
            self.positions, self.working, self.filled, protection, ours=self.ours, skip=self.skip
        )

    def doc(self) -> dict[str, object]:
        return {
            "positions": [
                {**p.contract.to_row(), "quantity": p.quantity, "avg_price": p.avg_price,
                 "mark": p.mark}
                for p in self.positions
            ],
            "working": [
                {**w.contract.to_row(), "signed_quantity": w.signed_quantity,
                 "limit_price": w.limit_price, "multiplier": w.multiplier,
                 "order_ref": w.order_ref}
                for w in self.working
            ],
            "filled": dict(self.filled),
            "ours": sorted(self.ours),
            "skip": sorted(self.skip),
            "protection": None if self.protection is None else dataclasses.asdict(self.protection),
        }  # fmt: skip

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> CoverInputs:
        """Read back `doc()` (KeyError / TypeError / ValueError on a malformed record)."""
        protection = doc["protection"]
        return cls(
            positions=tuple(
                Covered(
                    contract=Contract.from_row(p),
                    quantity=float(p["quantity"]),
                    avg_price=float(p["avg_price"]),
                    mark=float(p["mark"]),
                )
                for p in doc["positions"]
            ),
            working=tuple(
                WorkingOrder(
                    contract=Contract.from_row(w),
                    signed_quantity=float(w["signed_quantity"]),
                    limit_price=None if w["limit_price"] is None else float(w["limit_price"]),
                    multiplier=float(w["multiplier"]),
                    order_ref=str(w["order_ref"]),
                )
                for w in doc["working"]
            ),
            filled={str(k): float(v) for k, v in doc["filled"].items()},
            ours=frozenset(doc["ours"]),
            skip=frozenset(doc["skip"]),
            protection=None if protection is None else Protection(**protection),
        )


def step_doc(step: Step) -> dict[str, Any]:
    """One step as JSON-able data (its kind, its contract key, the rest of its fields)."""
    out: dict[str, Any] = {"step": type(step).__name__}
    for f in dataclasses.fields(step):
        value = getattr(step, f.name)
        if isinstance(value, Contract):
            out["key"] = value.key
        elif isinstance(value, Protect | Close):
            out[f.name] = step_doc(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out
