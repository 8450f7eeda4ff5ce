"""Order matching for the paper account: MKT/LMT/STP/STP LMT, DAY/GTC/IOC, brackets and OCA.

The engine is synchronous and single-threaded (the gateway's event loop calls it). It never
talks to sockets: every change is reported to a `Sink`, which routes messages to clients.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .account import Account, commission_for
from .instruments import Contract
from .market import MarketModel

__all__ = ["Engine", "Execution", "Order", "OrderError", "OrderSpec", "Sink"]

ORDER_TYPES = frozenset({"MKT", "LMT", "STP", "STP LMT"})
STOP_TYPES = frozenset({"STP", "STP LMT"})
TIFS = frozenset({"DAY", "GTC", "IOC"})
DONE = frozenset({"Filled", "Cancelled", "Inactive"})


class OrderError(Exception):
    """An order or cancel refused with an IB error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """What a client asked for in placeOrder (already resolved to a listed contract)."""

    contract: Contract
    action: str
    quantity: float
    order_type: str
    lmt_price: float | None = None
    aux_price: float | None = None
    tif: str = "DAY"
    order_ref: str = ""
    account: str = ""
    parent_id: int = 0
    transmit: bool = True
    oca_group: str = ""
    outside_rth: bool = False
    what_if: bool = False
    oca_type: int = 0  # 1 cancel the others on a fill; 2/3 reduce them by the fill (0 = 1)


@dataclass(slots=True)
class Order:
    order_id: int
    client_id: int
    perm_id: int
    spec: OrderSpec
    status: str = "PendingSubmit"  # held (untransmitted) until transmitted
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    triggered: bool = False
    resting: bool = False  # rested in the book at least once (fills at its limit)
    why_held: str = ""
    completed_status: str = ""
    completed_time: str = ""
    children: list[int] = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return max(self.spec.quantity - self.filled, 0.0)

    @property
    def is_done(self) -> bool:
        return self.status in DONE

    @property
    def is_live(self) -> bool:
        """Working at the exchange: Submitted, or a stop PreSubmitted until it triggers (a
        held bracket child is PreSubmitted too, but waits for its parent)."""
        return self.status == "Submitted" or (
            self.status == "PreSubmitted" and self.why_held != "child"
        )

    @property
    def key(self) -> tuple[int, int]:
        return (self.client_id, self.order_id)


@dataclass(frozen=True, slots=True)
class Execution:
    exec_id: str
    order: Order
    contract: Contract
    side: str  # BOT | SLD
    shares: float
    price: float
    time: str
    cum_qty: float
    avg_price: float
    commission: float
    realized_pnl: float | None


class Sink(Protocol):
    def order_changed(self, order: Order) -> None: ...
    def executed(self, execution: Execution) -> None: ...
    def order_error(self, order_id: int, client_id: int, code: int, message: str) -> None: ...
    def positions_changed(self, contracts: list[Contract]) -> None: ...


class Engine:
    """Matches orders against the market model and books fills into the account."""

    def __init__(
        self,
        market: MarketModel,
        account: Account,
        sink: Sink,
        now: Callable[[], dt.datetime],
        partial_fill_above: float = 0.0,
    ) -> None:
        self.market = market
        self.account = account
        self.sink = sink
        self.now = now
        self.partial_fill_above = partial_fill_above
        self.orders: dict[tuple[int, int], Order] = {}
        self.executions: list[Execution] = []
        self.reject_next: int | None = None
        self.reject_next_type: str | None = None  # None: the next order of any type
        self._perm_ids = itertools.count(1_000_001)
        self._exec_seq = itertools.count(1)
        self.max_order_id = 0

    # --- queries ---------------------------------------------------------------------------
    def open_orders(self, client_id: int | None = None) -> list[Order]:
        return [
            o
            for o in self.orders.values()
            if not o.is_done and (client_id is None or o.client_id == client_id)
        ]

    def completed_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.is_done]

    # --- commands --------------------------------------------------------------------------
    def place(self, client_id: int, order_id: int, spec: OrderSpec) -> Order | None:
        """Accept, modify or reject an order. A refusal is reported to the sink with IB's code;
        a refused new order is kept as a completed order (status Cancelled, reason recorded) so
        that reconciliation by orderRef finds it."""
        self.max_order_id = max(self.max_order_id, order_id)
        existing = self.orders.get((client_id, order_id))
        if existing is not None:
            if existing.is_done:
                self.sink.order_error(order_id, client_id, 103, f"Duplicate order id {order_id}")
                return None
            try:
                return self._modify(existing, spec)
            except OrderError as exc:
                self.sink.order_error(order_id, client_id, exc.code, exc.message)
                return existing
        order = Order(order_id, client_id, next(self._perm_ids), spec)
        try:
            self._validate(spec)
            if self.reject_next is not None and self.reject_next_type in (None, spec.order_type):
                code, self.reject_next = self.reject_next, None
                raise OrderError(
                    code,
                    "Order rejected - reason: rejected by the paper gateway (admin reject_next)",
                )
            self._check_funds(spec)
            parent = self.orders.get((client_id, spec.parent_id)) if spec.parent_id else None
            if spec.parent_id and (parent is None or parent.is_done):
                raise OrderError(
                    201,
                    f"Order rejected - reason: parent order {spec.parent_id} "
                    "is not an open order of this client",
                )
        except OrderError as exc:
            self.orders[order.key] = order
            self.sink.order_error(order_id, client_id, exc.code, exc.message)
            self._finish(order, "Cancelled", f"Rejected: {exc.message}")
            return order
        self.orders[order.key] = order
        if parent is not None:
            parent.children.append(order_id)
        if not spec.transmit:
            return order  # held: IB keeps untransmitted orders until a later order transmits
        self._activate(order)
        return order

    def cancel(self, client_id: int, order_id: int) -> Order | None:
        """Cancel one of the client's orders; errors 10147 (unknown) and 10148 (done)."""
        order = self.orders.get((client_id, order_id))
        if order is None:
            self.sink.order_error(
                order_id,
                client_id,
                10147,
                f"OrderId {order_id} that needs to be cancelled is not found.",
            )
            return None
        if order.is_done:
            self.sink.order_error(
                order_id,
                client_id,
                10148,
                f"OrderId {order_id} that needs to be cancelled cannot be "
                f"cancelled, state: {order.status}.",
            )
            return order
        self._cancel_tree(order, "Cancelled by client")
        return order

    def global_cancel(self) -> list[Order]:
        cancelled = [o for o in self.orders.values() if not o.is_done]
        for order in cancelled:
            if not order.is_done:
                self._finish(order, "Cancelled", "Cancelled by global cancel")
        return cancelled

    def cancel_day_orders(self) -> None:
        """Drop DAY and IOC orders, as the nightly reset does; GTC orders stay working."""
        for order in list(self.orders.values()):
            if not order.is_done and order.spec.tif != "GTC":  # its held children go with it
                self._cancel_tree(order, "Cancelled at gateway restart (DAY order)")

    def on_market(self) -> None:
        """Re-check every working order after a price change."""
        for order in list(self.orders.values()):
            if order.is_live:
                self._work(order, on_arrival=False)

    # --- internals -------------------------------------------------------------------------
    def _validate(self, spec: OrderSpec) -> None:
        if spec.order_type not in ORDER_TYPES:
            raise OrderError(387, f"Unsupported order type {spec.order_type!r}")
        if spec.action not in ("BUY", "SELL"):
            raise OrderError(201, f"Order rejected - reason: invalid action {spec.action!r}")
        if spec.tif not in TIFS:
            raise OrderError(201, f"Order rejected - reason: unsupported TIF {spec.tif!r}")
        if not math.isfinite(spec.quantity) or spec.quantity <= 0:
            raise OrderError(201, f"Order rejected - reason: invalid quantity {spec.quantity}")
        if spec.account and spec.account != self.account.account_id:
            raise OrderError(201, f"Order rejected - reason: unknown account {spec.account}")
        if spec.order_type in ("LMT", "STP LMT") and not _valid_price(spec.lmt_price):
            raise OrderError(201, "Order rejected - reason: limit price missing or invalid")
        if spec.order_type in ("STP", "STP LMT") and not _valid_price(spec.aux_price):
            raise OrderError(201, "Order rejected - reason: stop price missing or invalid")

    def _expected_price(self, spec: OrderSpec) -> float:
        """Price the order would trade at now: the touch, or a buy limit above it."""
        quote = self.market.quote(spec.contract, self.now())
        price = quote.ask if spec.action == "BUY" else quote.bid
        if spec.action == "BUY" and spec.lmt_price is not None and _valid_price(spec.lmt_price):
            price = max(price, spec.lmt_price)
        return price

    def commission_estimate(self, spec: OrderSpec) -> float:
        """Return the commission the whole order would pay, by the model that charges fills."""
        return commission_for(spec.contract, spec.quantity, self._expected_price(spec))

    def initial_margin(self, spec: OrderSpec) -> float:
        """Return the initial margin the order would add (used by the funds check and whatIf)."""
        price = self._expected_price(spec)
        return self.account.margin_for(
            spec.contract,
            spec.action,
            spec.quantity,
            price,
            self.market.price(spec.contract.symbol),
        )

    def _check_funds(self, spec: OrderSpec) -> None:
        needed = self.initial_margin(spec)
        values = self.account.values(self.mark)
        if needed > values["AvailableFunds"]:
            raise OrderError(
                201,
                "Order rejected - reason: YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE "
                f"DESIRED POSITION YOUR AVAILABLE FUNDS {values['AvailableFunds']:.2f} USD MUST "
                f"EXCEED THE INITIAL MARGIN {needed:.2f} USD",
            )

    def mark(self, contract: Contract) -> float:
        return self.market.quote(contract, self.now()).mid

    def _modify(self, order: Order, spec: OrderSpec) -> Order:
        if spec.contract.con_id != order.spec.contract.con_id or spec.action != order.spec.action:
            raise OrderError(105, "Order being modified does not match original order.")
        if spec.quantity < order.filled:
            raise OrderError(201, "Order rejected - reason: quantity below the filled quantity")
        self._validate(spec)
        order.spec = spec
        if order.status in ("Submitted", "PreSubmitted"):
            self.sink.order_changed(order)
            if order.is_live:
                self._work(order, on_arrival=True)
        elif spec.transmit and order.status == "PendingSubmit":
            self._activate(order)
        return order

    def _activate(self, order: Order) -> None:
        """Transmit an order: a child transmits its held parent and siblings too."""
        if order.spec.parent_id:
            parent = self.orders[(order.client_id, order.spec.parent_id)]
            if parent.status == "PendingSubmit":
                self._activate(parent)
                return
            if parent.status != "Filled":
                self._hold_children(parent)
                return
            self._go_live(order)
            self._work(order, on_arrival=True)
            return
        self._go_live(order)
        if order.children:
            self._hold_children(order)
        self._work(order, on_arrival=True)

    def _hold_children(self, parent: Order) -> None:
        for child_id in parent.children:
            child = self.orders[(parent.client_id, child_id)]
            if child.status == "PendingSubmit" and not parent.is_done:
                child.status = "PreSubmitted"
                child.why_held = "child"
                self.sink.order_changed(child)

    def _release_children(self, parent: Order) -> None:
        for child_id in parent.children:
            child = self.orders[(parent.client_id, child_id)]
            if child.status in ("PreSubmitted", "PendingSubmit") and not child.is_live:
                self._go_live(child)
        for child_id in parent.children:
            child = self.orders[(parent.client_id, child_id)]
            if child.is_live:
                self._work(child, on_arrival=True)

    def _go_live(self, order: Order) -> None:
        """Make a transmitted order work: Submitted, or PreSubmitted for a stop that has not
        triggered (IB holds simulated stops until the trigger price trades)."""
        untriggered = order.spec.order_type in STOP_TYPES and not order.triggered
        order.status = "PreSubmitted" if untriggered else "Submitted"
        order.why_held = ""
        self.sink.order_changed(order)

    def _executable_price(self, order: Order, on_arrival: bool) -> float | None:
        spec = order.spec
        quote = self.market.quote(spec.contract, self.now())
        buy = spec.action == "BUY"
        touch = quote.ask if buy else quote.bid
        if touch <= 0:
            return None
        kind = spec.order_type
        if kind in ("STP", "STP LMT") and not order.triggered:
            stop = spec.aux_price or 0.0
            if (buy and quote.ask >= stop) or (not buy and quote.bid <= stop):
                order.triggered = True
            else:
                return None
            kind = "MKT" if kind == "STP" else "LMT"
        elif kind == "STP":
            kind = "MKT"
        elif kind == "STP LMT":
            kind = "LMT"
        if kind == "MKT":
            return touch
        limit = spec.lmt_price or 0.0
        crossed = touch <= limit if buy else touch >= limit
        if not crossed:
            return None
        if order.resting and not on_arrival:
            return limit  # a resting limit is filled at its price when the market trades through
        return touch

    def _work(self, order: Order, on_arrival: bool) -> None:
        if not order.is_live:
            return
        price = self._executable_price(order, on_arrival)
        if order.triggered and order.status == "PreSubmitted":  # the stop elected: it works
            order.status = "Submitted"
            self.sink.order_changed(order)
        if price is None:
            if order.spec.tif == "IOC":
                self._cancel_tree(order, "IOC order not marketable")
            else:
                order.resting = True
            return
        clip = order.remaining
        if self.partial_fill_above > 0 and order.spec.quantity > self.partial_fill_above:
            clip = min(clip, self.partial_fill_above)
        self._fill(order, clip, price)
        if not order.is_done and order.spec.tif == "IOC":
            self._cancel_tree(order, "IOC remainder cancelled")
        elif not order.is_done:
            order.resting = True

    def _fill(self, order: Order, qty: float, price: float) -> None:
        contract = order.spec.contract
        side = "BOT" if order.spec.action == "BUY" else "SLD"
        commission = commission_for(contract, qty, price)
        realized = self.account.apply_fill(contract, side, qty, price, commission)
        total_cost = order.avg_fill_price * order.filled + price * qty
        order.filled += qty
        order.avg_fill_price = round(total_cost / order.filled, 8)
        order.last_fill_price = price
        now = self.now()
        execution = Execution(
            exec_id=f"0000{self.market.seed:04d}.{now:%Y%m%d}.{next(self._exec_seq):08d}.01",
            order=order,
            contract=contract,
            side=side,
            shares=qty,
            price=price,
            time=now.strftime("%Y%m%d %H:%M:%S") + " UTC",
            cum_qty=order.filled,
            avg_price=order.avg_fill_price,
            commission=commission,
            realized_pnl=realized,
        )
        self.executions.append(execution)
        if order.remaining <= 1e-9:
            order.status = "Filled"
            order.completed_status = "Filled"
            order.completed_time = now.strftime("%Y%m%d %H:%M:%S") + " UTC"
        self.sink.executed(execution)
        self.sink.order_changed(order)
        self.sink.positions_changed([contract])
        self._oca_fill(order, qty)
        if order.status == "Filled":
            if order.children:
                self._release_children(order)
            self._cancel_bracket_siblings(order)

    def _cancel_bracket_siblings(self, order: Order) -> None:
        """A bracket's children are one-cancels-all: a filled child cancels the others."""
        if not order.spec.parent_id:
            return
        parent = self.orders.get((order.client_id, order.spec.parent_id))
        for child_id in parent.children if parent else []:
            other = self.orders[(order.client_id, child_id)]
            if other is not order and not other.is_done:
                self._finish(other, "Cancelled", "OCA group cancellation (bracket child filled)")

    def _oca_fill(self, order: Order, qty: float) -> None:
        """An OCA group member traded `qty`: with ocaType 1 (IB's default) every other member
        is cancelled; with 2 or 3 each is reduced by the filled quantity (cancelled at 0)."""
        group = order.spec.oca_group
        if not group:
            return
        for other in list(self.orders.values()):
            if other is order or other.is_done or other.spec.oca_group != group:
                continue
            if order.spec.oca_type in (2, 3):
                left = other.spec.quantity - qty
                if left > other.filled + 1e-9:
                    other.spec = dataclasses.replace(other.spec, quantity=left)
                    self.sink.order_changed(other)
                    continue
            self._finish(other, "Cancelled", f"OCA group {group} cancellation (a member filled)")

    def _cancel_tree(self, order: Order, reason: str) -> None:
        for child_id in order.children:
            child = self.orders.get((order.client_id, child_id))
            if child and not child.is_done:
                self._finish(child, "Cancelled", reason + " (parent cancelled)")
        if not order.is_done:
            self._finish(order, "Cancelled", reason)

    def _finish(self, order: Order, status: str, why: str) -> None:
        order.status = status
        order.completed_status = why
        order.completed_time = self.now().strftime("%Y%m%d %H:%M:%S") + " UTC"
        self.sink.order_changed(order)
        if status == "Cancelled" and not why.startswith("Rejected"):
            self.sink.order_error(
                order.order_id, order.client_id, 202, f"Order Canceled - reason: {why}"
            )


def _valid_price(price: float | None) -> bool:
    return price is not None and math.isfinite(price) and price > 0
