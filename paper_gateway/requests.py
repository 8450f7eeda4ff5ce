"""Client-to-server request layouts the gateway understands (server version 176)."""

from __future__ import annotations

from dataclasses import dataclass

from .instruments import Contract, valid_exchanges
from .wire import UNSET_DOUBLE, FieldReader, ProtocolError

__all__ = [
    "ContractRef",
    "ExecFilter",
    "HistoricalRequest",
    "MktDataRequest",
    "PlaceOrderRequest",
    "contradiction",
    "parse_contract12",
    "parse_exec_filter",
    "parse_historical",
    "parse_mkt_data",
    "parse_place_order",
]


@dataclass(frozen=True, slots=True)
class ContractRef:
    con_id: int
    symbol: str
    sec_type: str
    expiry: str
    strike: float
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str

    def describe(self) -> str:
        if self.con_id:
            return f"conId={self.con_id}"
        parts = [self.symbol, self.sec_type]
        if self.sec_type == "OPT":
            parts += [self.expiry, f"{self.strike:g}", self.right]
        return " ".join(p for p in parts if p)


def contradiction(ref: ContractRef, c: Contract) -> str | None:
    """Return which field of a request contradicts the listed contract `c`, or None."""
    if ref.currency and ref.currency.upper() != c.currency:
        return "currency"
    if ref.exchange and ref.exchange.upper() not in valid_exchanges(c.sec_type):
        return "exchange"
    primary = ref.primary_exchange.upper()
    if primary and c.primary_exchange and primary != c.primary_exchange:
        return "primaryExchange"
    if ref.multiplier and c.sec_type == "OPT":
        try:
            if float(ref.multiplier) != c.multiplier:
                return "multiplier"
        except ValueError:
            return "multiplier"
    return None


def parse_contract12(r: FieldReader) -> ContractRef:
    con_id = r.integer()
    symbol = r.text().upper()
    sec_type = r.text().upper()
    expiry = r.text().split(" ")[0]
    strike = r.number(0.0)
    right = r.text().upper()[:1]
    multiplier = r.text()
    exchange = r.text()
    primary = r.text()
    currency = r.text()
    local_symbol = r.text()
    trading_class = r.text()
    return ContractRef(
        con_id,
        symbol,
        sec_type,
        expiry,
        0.0 if strike == UNSET_DOUBLE else strike,
        right,
        multiplier,
        exchange,
        primary,
        currency,
        local_symbol,
        trading_class,
    )


@dataclass(frozen=True, slots=True)
class PlaceOrderRequest:
    order_id: int
    contract: ContractRef
    action: str
    quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    what_if: bool
    oca_type: int = 0


def _opt_price(v: float) -> float | None:
    return None if v == UNSET_DOUBLE else v


def parse_place_order(fields: list[str]) -> PlaceOrderRequest:
    """Parse placeOrder (msg 3) up to whatIf; later fields are not needed by the gateway."""
    r = FieldReader(fields)
    r.skip(1)
    order_id = r.integer()
    contract = parse_contract12(r)
    r.skip(2)  # secIdType, secId
    action = r.text().upper()
    quantity = r.number(0.0)
    order_type = r.text().upper()
    lmt = _opt_price(r.number())
    aux = _opt_price(r.number())
    tif = r.text().upper() or "DAY"
    oca_group = r.text()
    account = r.text()
    r.skip(2)  # openClose, origin
    order_ref = r.text()
    transmit = r.flag()
    parent_id = r.integer()
    r.skip(4)  # blockOrder, sweepToFill, displaySize, triggerMethod
    outside_rth = r.flag()
    r.skip(1)  # hidden
    if contract.sec_type == "BAG":
        raise ProtocolError("combo (BAG) orders are not supported by the paper gateway")
    r.skip(1 + 11)  # sharesAllocation, then discretionaryAmt .. exemptCode
    oca_type = r.integer(0)
    r.skip(17)  # rule80A .. volatilityType
    dn_order_type = r.text()
    r.skip(1)
    if dn_order_type:
        r.skip(8)
    r.skip(6)  # continuousUpdate .. scaleSubsLevelSize
    increment = r.number()
    if 0 < increment < UNSET_DOUBLE:
        r.skip(7)
    r.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if r.text():  # hedgeType
        r.skip(1)
    r.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if r.flag():  # delta-neutral contract
        r.skip(3)
    if r.text():  # algoStrategy
        n = r.integer()
        r.skip(2 * n)
    r.skip(1)  # algoId
    what_if = r.flag()
    return PlaceOrderRequest(
        order_id,
        contract,
        action,
        quantity,
        order_type,
        lmt,
        aux,
        tif,
        oca_group,
        account,
        order_ref,
        transmit,
        parent_id,
        outside_rth,
        what_if,
        oca_type,
    )


@dataclass(frozen=True, slots=True)
class MktDataRequest:
    req_id: int
    contract: ContractRef
    generic_ticks: frozenset[str]
    snapshot: bool


def parse_mkt_data(fields: list[str]) -> MktDataRequest:
    r = FieldReader(fields)
    r.skip(2)
    req_id = r.integer()
    contract = parse_contract12(r)
    if contract.sec_type == "BAG":
        n = r.integer()
        r.skip(4 * n)
    if r.flag():
        r.skip(3)
    generic = frozenset(t.strip() for t in r.text().split(",") if t.strip())
    snapshot = r.flag()
    return MktDataRequest(req_id, contract, generic, snapshot)


@dataclass(frozen=True, slots=True)
class HistoricalRequest:
    req_id: int
    contract: ContractRef
    end: str
    bar_size: str
    duration: str
    use_rth: bool
    what: str
    format_date: int
    keep_up_to_date: bool


def parse_historical(fields: list[str]) -> HistoricalRequest:
    r = FieldReader(fields)
    r.skip(1)
    req_id = r.integer()
    contract = parse_contract12(r)
    r.skip(1)  # includeExpired
    end = r.text()
    bar_size = r.text()
    duration = r.text()
    use_rth = r.flag()
    what = r.text().upper()
    format_date = r.integer(1)
    if contract.sec_type == "BAG":
        n = r.integer()
        r.skip(4 * n)
    keep = r.flag() if r.remaining else False
    return HistoricalRequest(
        req_id, contract, end, bar_size, duration, use_rth, what, format_date, keep
    )


@dataclass(frozen=True, slots=True)
class ExecFilter:
    req_id: int
    client_id: int
    account: str
    time: str
    symbol: str
    sec_type: str
    side: str


def parse_exec_filter(fields: list[str]) -> ExecFilter:
    r = FieldReader(fields)
    r.skip(2)
    req_id = r.integer()
    client_id = r.integer()
    account = r.text()
    time = r.text()
    symbol = r.text().upper()
    sec_type = r.text().upper()
    r.skip(1)  # exchange
    side = r.text().upper()
    return ExecFilter(req_id, client_id, account, time, symbol, sec_type, side)
