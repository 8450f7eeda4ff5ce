"""A small TWS API test client of ours that decodes every reply field by field for the server
version it negotiated, and raises LayoutError on any field too many, too few or of the wrong
type. It knows the layouts from the client libraries' decoders (IB's 9.81 `ibapi` for v157,
ib_insync/ib_async for later versions); the thresholds are written out here, not imported
from the gateway, so a wrong threshold in the gateway cannot be mirrored.

Requests are encoded by the client library's own unmodified `Client` (ib_insync's, or
ib_async's with IB_CLIENT_LIBRARY=ib_async) at the negotiated version (its `sendMsg` is captured
instead of written to its socket).
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ib_client import lib

Client = lib.client.Client

__all__ = ["Decoded", "LayoutError", "RawSession", "decode"]

# the server versions at which the layouts this client reads change (IB's MIN_SERVER_VER_*)
DURATION = 158
POST_TO_ATS = 160
AUTO_CANCEL_PARENT = 162
FRACTIONAL_SIZE_SUPPORT = 163
SIZE_RULES = 164
ADVANCED_ORDER_REJECT = 166
PEGBEST_PEGMID_OFFSETS = 170
INSTRUMENT_TIMEZONE = 174
BOND_ISSUERID = 176


class LayoutError(AssertionError):
    """A message does not have the layout of the negotiated version."""


class Reader:
    """Consume typed fields in order, the way IB's `decode()` does (empty int/float = 0)."""

    def __init__(self, fields: list[str], version: int) -> None:
        self.fields = fields
        self.version = version
        self.pos = 0

    def _next(self) -> str:
        if self.pos >= len(self.fields):
            raise LayoutError(f"message {self.fields[:1]} ended early at field {self.pos}")
        value = self.fields[self.pos]
        self.pos += 1
        return value

    def str(self) -> str:
        return self._next()

    def int(self) -> int:
        text = self._next()
        try:
            return int(text or 0)
        except ValueError as exc:
            raise LayoutError(f"field {self.pos - 1} of {self.fields[:3]}: {exc}") from exc

    def float(self) -> float:
        text = self._next()
        try:
            return float(text or 0)
        except ValueError as exc:
            raise LayoutError(f"field {self.pos - 1} of {self.fields[:3]}: {exc}") from exc

    def size(self) -> float:
        """A size: an integer before FRACTIONAL_SIZE_SUPPORT, a decimal from it on."""
        return self.float() if self.version >= FRACTIONAL_SIZE_SUPPORT else self.int()

    def skip(self, n: int) -> None:
        for _ in range(n):
            self._next()

    def done(self) -> None:
        if self.pos != len(self.fields):
            extra = self.fields[self.pos :]
            raise LayoutError(f"message {self.fields[:2]} has {len(extra)} extra fields {extra}")


@dataclass
class Decoded:
    msg_id: int
    values: dict[str, Any] = field(default_factory=dict)


def _contract11(r: Reader) -> dict[str, Any]:
    return {
        "conId": r.int(),
        "symbol": r.str(),
        "secType": r.str(),
        "expiry": r.str(),
        "strike": r.float(),
        "right": r.str(),
        "multiplier": r.str(),
        "exchange": r.str(),
        "currency": r.str(),
        "localSymbol": r.str(),
        "tradingClass": r.str(),
    }


def _tick_price(r: Reader) -> dict[str, Any]:
    r.int()
    return {
        "reqId": r.int(),
        "tickType": r.int(),
        "price": r.float(),
        "size": r.size(),
        "a": r.int(),
    }


def _tick_size(r: Reader) -> dict[str, Any]:
    r.int()
    return {"reqId": r.int(), "tickType": r.int(), "size": r.size()}


def _order_status(r: Reader) -> dict[str, Any]:
    out = {"orderId": r.int(), "status": r.str(), "filled": r.float(), "remaining": r.float()}
    out |= {"avgFillPrice": r.float(), "permId": r.int(), "parentId": r.int()}
    out |= {"lastFillPrice": r.float(), "clientId": r.int(), "whyHeld": r.str()}
    out["mktCapPrice"] = r.float()
    return out


def _error(r: Reader) -> dict[str, Any]:
    r.int()
    out = {"reqId": r.int(), "code": r.int(), "msg": r.str()}
    if r.version >= ADVANCED_ORDER_REJECT:
        out["advancedOrderRejectJson"] = r.str()
    return out


def _order_common(r: Reader, completed: bool) -> dict[str, Any]:
    """openOrder / completedOrder from the contract to deltaNeutralAuxPrice."""
    out: dict[str, Any] = {} if completed else {"orderId": r.int()}
    out |= _contract11(r)
    out |= {"action": r.str(), "totalQuantity": r.float(), "orderType": r.str()}
    out |= {"lmtPrice": r.str(), "auxPrice": r.str(), "tif": r.str(), "ocaGroup": r.str()}
    out |= {"account": r.str(), "openClose": r.str(), "origin": r.int(), "orderRef": r.str()}
    if not completed:
        out["clientId"] = r.int()
    out["permId"] = r.int()
    r.skip(4)  # outsideRth hidden discretionaryAmt goodAfterTime
    if not completed:
        r.skip(1)  # deprecated sharesAllocation
    r.skip(6)  # faGroup faMethod faPercentage faProfile modelCode goodTillDate
    r.skip(6)  # rule80A percentOffset settlingFirm shortSaleSlot designatedLocation exemptCode
    if not completed:
        r.skip(1)  # auctionStrategy
    r.skip(5)  # startingPrice stockRefPrice delta stockRangeLower stockRangeUpper
    r.skip(1)  # displaySize
    if not completed:
        r.skip(1)  # blockOrder
    r.skip(4)  # sweepToFill allOrNone minQty ocaType
    if not completed:
        r.skip(3)  # eTradeOnly firmQuoteOnly nbboPriceCap
        out["parentId"] = r.int()
    r.skip(3)  # triggerMethod volatility volatilityType
    dn_order_type = r.str()
    r.skip(1)  # deltaNeutralAuxPrice
    if dn_order_type:
        r.skip(4 if completed else 8)
    return out


def _open_order(r: Reader) -> dict[str, Any]:
    out = _order_common(r, completed=False)
    r.skip(6)  # continuousUpdate referencePriceType trailStop trailingPercent basisPoints(Type)
    r.skip(1)  # comboLegsDescrip
    r.skip(8 * r.int())  # combo legs
    r.skip(r.int())  # order combo legs
    r.skip(2 * r.int())  # smart combo routing params
    r.skip(2)  # scaleInitLevelSize scaleSubsLevelSize
    increment = r.float()
    if 0 < increment < 1e300:
        r.skip(7)
    if r.str():  # hedgeType
        r.skip(1)
    r.skip(4)  # optOutSmartRouting clearingAccount clearingIntent notHeld
    if r.int():  # delta-neutral contract
        r.skip(3)
    if r.str():  # algoStrategy
        r.skip(2 * r.int())
    r.skip(1)  # solicited
    out["whatIf"] = r.int()
    out["status"] = r.str()
    out["margin"] = [r.str() for _ in range(9)]
    out["commission"] = r.str()
    out["minCommission"] = r.str()
    out["maxCommission"] = r.str()
    out["commissionCurrency"] = r.str()
    r.skip(1)  # warningText
    r.skip(2)  # randomizeSize randomizePrice
    if out["orderType"] == "PEG BENCH":
        r.skip(5)
    conditions = r.int()
    if conditions:
        raise LayoutError("this client does not read order conditions")
    r.skip(8)  # adjustedOrderType .. adjustableTrailingUnit
    r.skip(3)  # softDollarTier name, value, displayName
    r.skip(5)  # cashQty dontUseAutoPriceForHedge isOmsContainer discretionaryUpTo usePriceMgmt
    if r.version >= DURATION:
        r.skip(1)
    if r.version >= POST_TO_ATS:
        r.skip(1)
    if r.version >= AUTO_CANCEL_PARENT:
        r.skip(1)
    if r.version >= PEGBEST_PEGMID_OFFSETS:
        r.skip(5)
    return out


def _completed_order(r: Reader) -> dict[str, Any]:
    out = _order_common(r, completed=True)
    r.skip(4)  # continuousUpdate referencePriceType trailStopPrice trailingPercent
    r.skip(1)  # comboLegsDescrip
    r.skip(8 * r.int())
    r.skip(r.int())
    r.skip(2 * r.int())
    r.skip(2)
    increment = r.float()
    if 0 < increment < 1e300:
        r.skip(7)
    if r.str():
        r.skip(1)
    r.skip(3)  # clearingAccount clearingIntent notHeld
    if r.int():
        r.skip(3)
    if r.str():
        r.skip(2 * r.int())
    r.skip(1)  # solicited
    out["status"] = r.str()
    r.skip(2)  # randomizeSize randomizePrice
    if out["orderType"] == "PEG BENCH":
        r.skip(5)
    if r.int():
        raise LayoutError("this client does not read order conditions")
    r.skip(2)  # trailStopPrice lmtPriceOffset
    r.skip(4)  # cashQty dontUseAutoPriceForHedge isOmsContainer autoCancelDate
    out["filledQuantity"] = r.float()
    r.skip(6)  # refFuturesConId autoCancelParent shareholder imbalanceOnly routeToBbo parentPerm
    out["completedTime"] = r.str()
    out["completedStatus"] = r.str()
    if r.version >= PEGBEST_PEGMID_OFFSETS:
        r.skip(5)
    return out


def _contract_data(r: Reader) -> dict[str, Any]:
    if r.version < SIZE_RULES:
        out: dict[str, Any] = {"version": r.int()}
    else:
        out = {}
    out |= {"reqId": r.int(), "symbol": r.str(), "secType": r.str(), "expiry": r.str()}
    out |= {"strike": r.float(), "right": r.str(), "exchange": r.str(), "currency": r.str()}
    out |= {"localSymbol": r.str(), "marketName": r.str(), "tradingClass": r.str()}
    out |= {"conId": r.int(), "minTick": r.float()}
    if r.version < SIZE_RULES:
        out["mdSizeMultiplier"] = r.int()
    out |= {"multiplier": r.str(), "orderTypes": r.str(), "validExchanges": r.str()}
    out |= {"priceMagnifier": r.int(), "underConId": r.int(), "longName": r.str()}
    out |= {"primaryExchange": r.str(), "contractMonth": r.str(), "industry": r.str()}
    out |= {"category": r.str(), "subcategory": r.str(), "timeZoneId": r.str()}
    out |= {"tradingHours": r.str(), "liquidHours": r.str(), "evRule": r.str()}
    out["evMultiplier"] = r.float()
    r.skip(2 * r.int())  # secIdList
    out |= {"aggGroup": r.int(), "underSymbol": r.str(), "underSecType": r.str()}
    out |= {"marketRuleIds": r.str(), "realExpirationDate": r.str(), "stockType": r.str()}
    if r.version == FRACTIONAL_SIZE_SUPPORT:
        out["suggestedSizeIncrement"] = r.float()
    if r.version >= SIZE_RULES:
        out["minSize"] = r.float()
        out["sizeIncrement"] = r.float()
        out["suggestedSizeIncrement"] = r.float()
    return out


def _exec_details(r: Reader) -> dict[str, Any]:
    out = {"reqId": r.int(), "orderId": r.int()}
    out |= _contract11(r)
    out |= {"execId": r.str(), "time": r.str(), "acctNumber": r.str(), "execExchange": r.str()}
    out |= {"side": r.str(), "shares": r.float(), "price": r.float(), "permId": r.int()}
    out |= {"clientId": r.int(), "liquidation": r.int(), "cumQty": r.float()}
    out |= {"avgPrice": r.float(), "orderRef": r.str(), "evRule": r.str()}
    out |= {"evMultiplier": r.float(), "modelCode": r.str(), "lastLiquidity": r.int()}
    return out


def _historical_data(r: Reader) -> dict[str, Any]:
    out: dict[str, Any] = {"reqId": r.int(), "start": r.str(), "end": r.str(), "bars": []}
    for _ in range(r.int()):
        bar = {"date": r.str(), "open": r.float(), "high": r.float(), "low": r.float()}
        bar |= {"close": r.float(), "volume": r.size(), "wap": r.float(), "count": r.int()}
        out["bars"].append(bar)
    return out


def _pnl_single(r: Reader) -> dict[str, Any]:
    out = {"reqId": r.int(), "pos": r.size(), "daily": r.float(), "unrealized": r.float()}
    out |= {"realized": r.float(), "value": r.float()}
    return out


def _symbol_samples(r: Reader) -> dict[str, Any]:
    out: dict[str, Any] = {"reqId": r.int(), "contracts": []}
    for _ in range(r.int()):
        c = {"conId": r.int(), "symbol": r.str(), "secType": r.str()}
        c |= {"primaryExchange": r.str(), "currency": r.str()}
        c["derivatives"] = [r.str() for _ in range(r.int())]
        if r.version >= BOND_ISSUERID:
            c["description"] = r.str()
            c["issuerId"] = r.str()
        out["contracts"].append(c)
    return out


def _sec_def_opt_params(r: Reader) -> dict[str, Any]:
    out = {"reqId": r.int(), "exchange": r.str(), "underlyingConId": r.int()}
    out |= {"tradingClass": r.str(), "multiplier": r.str()}
    out["expirations"] = [r.str() for _ in range(r.int())]
    out["strikes"] = [r.float() for _ in range(r.int())]
    return out


def _fixed(*kinds: str) -> Callable[[Reader], dict[str, Any]]:
    """A layout of fixed typed fields after the message id; names are their positions."""

    def read(r: Reader) -> dict[str, Any]:
        return {str(i): getattr(r, kind)() for i, kind in enumerate(kinds)}

    return read


LAYOUTS: dict[int, Callable[[Reader], dict[str, Any]]] = {
    1: _tick_price,
    2: _tick_size,
    3: _order_status,
    4: _error,
    5: _open_order,
    6: _fixed("int", "str", "str", "str", "str"),  # accountValue v2
    7: _fixed(
        "int",
        "int",
        "str",
        "str",
        "str",
        "float",
        "str",
        "str",
        "str",
        "str",
        "str",
        "str",
        "float",
        "float",
        "float",
        "float",
        "float",
        "float",
        "str",
    ),  # portfolioValue v8
    8: _fixed("int", "str"),  # accountUpdateTime
    9: _fixed("int", "int"),  # nextValidId
    10: _contract_data,
    11: _exec_details,
    15: _fixed("int", "str"),  # managedAccounts
    17: _historical_data,
    21: _fixed(
        "int",
        "int",
        "int",
        "float",
        "float",
        "float",
        "float",
        "float",
        "float",
        "float",
        "float",
    ),  # tickOptionComputation (PRICE_BASED_VOLATILITY layout)
    45: _fixed("int", "int", "int", "float"),  # tickGeneric
    49: _fixed("int", "int"),  # currentTime
    52: _fixed("int", "int"),  # contractDataEnd
    53: _fixed("int"),  # openOrderEnd
    54: _fixed("int", "str"),  # accountDownloadEnd
    55: _fixed("int", "int"),  # execDetailsEnd
    57: _fixed("int", "int"),  # tickSnapshotEnd
    58: _fixed("int", "int", "int"),  # marketDataType
    59: _fixed("int", "str", "float", "str", "float", "float", "str"),  # commissionReport
    61: _fixed(
        "int",
        "str",
        "int",
        "str",
        "str",
        "str",
        "float",
        "str",
        "str",
        "str",
        "str",
        "str",
        "str",
        "float",
        "float",
    ),  # position v3
    62: _fixed("int"),  # positionEnd
    63: _fixed("int", "int", "str", "str", "str", "str"),  # accountSummary
    64: _fixed("int", "int"),  # accountSummaryEnd
    71: _fixed(
        "int",
        "int",
        "str",
        "int",
        "str",
        "str",
        "str",
        "float",
        "str",
        "str",
        "str",
        "str",
        "str",
        "str",
        "float",
        "float",
        "str",
    ),  # positionMulti
    72: _fixed("int", "int"),  # positionMultiEnd
    73: _fixed("int", "int", "str", "str", "str", "str", "str"),  # accountUpdateMulti
    74: _fixed("int", "int"),  # accountUpdateMultiEnd
    75: _sec_def_opt_params,
    76: _fixed("int"),  # securityDefinitionOptionParameterEnd
    79: _symbol_samples,
    88: _fixed("int", "str"),  # headTimestamp
    94: _fixed("int", "float", "float", "float"),  # pnl
    95: _pnl_single,
    101: _completed_order,
    102: _fixed(),  # completedOrdersEnd
}


def decode(fields: list[str], version: int) -> Decoded:
    """Decode one message strictly for `version`; raise LayoutError if it does not fit."""
    msg_id = int(fields[0])
    layout = LAYOUTS.get(msg_id)
    if layout is None:
        raise LayoutError(f"message id {msg_id} is not one this client can read: {fields}")
    r = Reader(fields, version)
    r.pos = 1
    values = layout(r)
    r.done()
    return Decoded(msg_id, values)


class _Encoder(Client):  # type: ignore[misc]
    """The client library's request encoder at a given server version; messages are captured."""

    def __init__(self, version: int) -> None:
        super().__init__(wrapper=None)
        self._serverVersion = version
        self.out: list[str] = []

    def isConnected(self) -> bool:
        return True

    def sendMsg(self, msg: str) -> None:
        self.out.append(msg)


class RawSession:
    """One TCP connection speaking the TWS API at the version the gateway answers."""

    def __init__(self, port: int, offer: str = "v100..157", client_id: int = 7) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.inbox: list[Decoded] = []
        payload = offer.encode()
        self.sock.sendall(b"API\0" + struct.pack(">I", len(payload)) + payload)
        first = self.read_frame(5.0)
        if len(first) != 2:
            self.version = 0
            self.refusal = first
            return
        self.version = int(first[0])
        self.refusal = []
        self.encoder = _Encoder(self.version)
        self.encoder.clientId = client_id
        self.send_fields([71, 2, client_id, ""])
        self.wait_for(lambda m: m.msg_id == 9)

    def close(self) -> None:
        self.sock.close()

    def read_frame(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                (size,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + size:
                    payload, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
                    fields = payload.decode().split("\0")
                    return fields[:-1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete message before the deadline")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("gateway closed the connection")
            self.buf += chunk

    def send_fields(self, fields: list[Any]) -> None:
        payload = "".join(f"{f}\0" for f in fields).encode()
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def request(self, method: str, *args: Any) -> None:
        """Encode a request with the library's Client.<method> at this version and send it."""
        getattr(self.encoder, method)(*args)
        for msg in self.encoder.out:
            data = msg.encode()
            self.sock.sendall(struct.pack(">I", len(data)) + data)
        self.encoder.out.clear()

    def wait_for(self, pred: Callable[[Decoded], bool], timeout: float = 5.0) -> Decoded:
        """Decode every message until one satisfies `pred`; all are kept in `inbox`."""
        for m in self.inbox:
            if pred(m):
                return m
        deadline = time.monotonic() + timeout
        while True:
            m = decode(self.read_frame(max(0.0, deadline - time.monotonic())), self.version)
            self.inbox.append(m)
            if pred(m):
                return m

    def errors(self, req_id: int | None = None) -> list[dict[str, Any]]:
        return [
            m.values
            for m in self.inbox
            if m.msg_id == 4 and (req_id is None or m.values["reqId"] == req_id)
        ]

    def of(self, msg_id: int, req_id: int | None = None) -> list[dict[str, Any]]:
        return [
            m.values
            for m in self.inbox
            if m.msg_id == msg_id and (req_id is None or m.values.get("reqId") == req_id)
        ]


BAR_TIME_WITH_ZONE = re.compile(r"^\d{8} \d\d:\d\d:\d\d US/Eastern$")
BAR_TIME_NO_ZONE = re.compile(r"^\d{8}  \d\d:\d\d:\d\d$")
