"""Server-to-client layouts of orders, executions, accounts, contracts and errors.

Each function returns the fields of one message (message id first) for the server version its
session negotiated; what varies by version is read from `ServerVersion`, never from a number.
The layouts are strict: ib_insync unpacks several messages by exact field count.
"""

from __future__ import annotations

import datetime as dt

from .account import Position
from .engine import Execution, Order
from .instruments import Contract, hours_strings, valid_exchanges
from .versions import ServerVersion
from .wire import UNSET_DOUBLE, Field

__all__ = [
    "account_summary",
    "account_update_multi",
    "account_value",
    "commission_report",
    "completed_order",
    "contract_details",
    "error",
    "exec_details",
    "open_order",
    "order_status",
    "pnl",
    "pnl_single",
    "portfolio_value",
    "position",
    "position_multi",
]

Fields = list[Field]


def _contract11(c: Contract, exchange: str | None = None) -> Fields:
    """conId .. tradingClass without primaryExchange (11 fields)."""
    return [
        c.con_id,
        c.symbol,
        c.sec_type,
        c.expiry,
        c.strike if c.sec_type == "OPT" else 0.0,
        c.right,
        str(c.multiplier) if c.sec_type == "OPT" else "",
        exchange or c.exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
    ]


def error(sv: ServerVersion, req_id: int, code: int, message: str) -> Fields:
    """Build error (4); advancedOrderRejectJson is appended from ADVANCED_ORDER_REJECT on."""
    out: Fields = [4, 2, req_id, code, message]
    if sv.advanced_reject:
        out.append("")
    return out


def order_status(sv: ServerVersion, o: Order) -> Fields:
    return [
        3,
        o.order_id,
        o.status,
        o.filled,
        o.remaining,
        o.avg_fill_price,
        o.perm_id,
        o.spec.parent_id,
        o.last_fill_price,
        o.client_id,
        o.why_held,
        0.0,
    ]


def _price(p: float | None) -> Field:
    return p if p is not None else UNSET_DOUBLE


def _order_tail(sv: ServerVersion) -> Fields:
    """minTradeQty .. midOffsetAtHalf, present from PEGBEST_PEGMID_OFFSETS on."""
    return ["", "", "", "", ""] if sv.peg_best_offsets else []


def open_order(
    sv: ServerVersion,
    o: Order,
    account: str,
    status: str | None = None,
    what_if: tuple[float, float, float, float] | None = None,
) -> Fields:
    """Build openOrder (about 130 fields) with every optional list empty.

    `what_if` is (initMargin, maintMargin, equityWithLoan, commission) for a whatIf preview.
    """
    s = o.spec
    c = s.contract
    margin = ["", "", "", "", "", "", "", "", ""]
    commission: Fields = ["", "", "", "", ""]
    if what_if is not None:
        init, maint, equity, fee = what_if
        commission = [fee, fee, fee, "USD", ""]
        margin = [
            "0",
            "0",
            str(equity),
            str(init),
            str(maint),
            "0",
            str(init),
            str(maint),
            str(equity),
        ]
    return [
        5,
        o.order_id,
        *_contract11(c),
        s.action,
        s.quantity,
        s.order_type,
        _price(s.lmt_price),
        _price(s.aux_price),
        s.tif,
        s.oca_group,
        account,
        "O",
        0,
        s.order_ref,
        o.client_id,
        o.perm_id,
        s.outside_rth,
        False,
        0.0,
        "",  # outsideRth, hidden, discretionaryAmt, goodAfterTime
        "",  # deprecated sharesAllocation
        "",
        "",
        "",
        "",
        "",
        "",  # faGroup faMethod faPercentage faProfile modelCode goodTillDate
        "",
        "",
        "",
        0,
        "",
        -1,  # rule80A percentOffset settlingFirm shortSaleSlot desLoc exempt
        0,
        "",
        "",
        "",
        "",
        "",  # auctionStrategy startingPrice stockRefPrice delta rangeLo rangeHi
        0,
        False,
        False,
        False,
        "",
        s.oca_type,  # displaySize block sweep allOrNone minQty ocaType
        False,
        False,
        "",  # eTradeOnly firmQuoteOnly nbboPriceCap
        s.parent_id,
        0,
        "",
        0,  # parentId triggerMethod volatility volatilityType
        "",
        "",  # deltaNeutralOrderType (must be empty), deltaNeutralAuxPrice
        False,
        0,
        "",
        "",
        "",
        "",  # continuousUpdate refPriceType trailStop trailPct bps bpsType
        "",  # comboLegsDescrip
        0,
        0,
        0,  # combo legs, order combo legs, smart combo routing params
        "",
        "",
        "",  # scaleInitLevelSize scaleSubsLevelSize scalePriceIncrement
        "",  # hedgeType
        False,
        "",
        "",
        False,
        False,  # optOutSmartRouting clearingAcct clearingIntent notHeld dnc
        "",  # algoStrategy
        False,
        what_if is not None,
        status or o.status,
        *margin,
        *commission,  # commission minCommission maxCommission commissionCurrency warning
        False,
        False,  # randomizeSize randomizePrice
        0,  # conditions
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        0,  # adjusted* and adjustableTrailingUnit
        "",
        "",
        "",  # softDollarTier name, value, displayName
        "",
        False,
        False,
        "",
        False,  # cashQty dontUseAutoPrice isOms discrUpTo usePriceMgmt
        *([""] if sv.duration else []),
        *([""] if sv.post_to_ats else []),
        *([False] if sv.auto_cancel_parent else []),
        *_order_tail(sv),
    ]


def completed_order(sv: ServerVersion, o: Order, account: str) -> Fields:
    s = o.spec
    c = s.contract
    return [
        101,
        *_contract11(c),
        s.action,
        s.quantity,
        s.order_type,
        _price(s.lmt_price),
        _price(s.aux_price),
        s.tif,
        s.oca_group,
        account,
        "O",
        0,
        s.order_ref,
        o.perm_id,
        s.outside_rth,
        False,
        0.0,
        "",  # outsideRth hidden discretionaryAmt goodAfterTime
        "",
        "",
        "",
        "",
        "",
        "",  # faGroup faMethod faPercentage faProfile modelCode goodTillDate
        "",
        "",
        "",
        0,
        "",
        -1,  # rule80A percentOffset settlingFirm shortSaleSlot desLoc exempt
        "",
        "",
        "",
        "",
        "",  # startingPrice stockRefPrice delta rangeLo rangeHi
        0,
        False,
        False,
        "",
        s.oca_type,  # displaySize sweepToFill allOrNone minQty ocaType
        0,
        "",
        0,  # triggerMethod volatility volatilityType
        "",
        "",  # deltaNeutralOrderType deltaNeutralAuxPrice
        False,
        0,
        "",
        "",  # continuousUpdate referencePriceType trailStopPrice trailingPercent
        "",  # comboLegsDescrip
        0,
        0,
        0,  # combo legs, order combo legs, smart combo routing params
        "",
        "",
        "",  # scale init/subs level size, price increment
        "",  # hedgeType
        "",
        "",
        False,
        False,  # clearingAccount clearingIntent notHeld dncPresent
        "",  # algoStrategy
        False,
        o.status,
        False,
        False,  # solicited status randomizeSize randomizePrice
        0,  # conditions
        "",
        "",
        "",
        False,
        False,
        "",  # trailStop lmtPriceOffset cashQty dontUseAuto isOms autoCancelDate
        o.filled,
        0,
        False,
        "",
        False,
        False,
        0,  # filledQty refFutConId autoCancelParent
        # shareholder imbalanceOnly routeMarketableToBbo parentPermId
        o.completed_time,
        o.completed_status,
        *_order_tail(sv),
    ]


def exec_details(sv: ServerVersion, req_id: int, e: Execution, account: str) -> Fields:
    c = e.contract
    o = e.order
    return [
        11,
        req_id,
        o.order_id,
        *_contract11(c, exchange="ISLAND" if c.sec_type == "STK" else "CBOE"),
        e.exec_id,
        e.time,
        account,
        "ISLAND" if c.sec_type == "STK" else "CBOE",
        e.side,
        e.shares,
        e.price,
        o.perm_id,
        o.client_id,
        0,
        e.cum_qty,
        e.avg_price,
        o.spec.order_ref,
        "",
        "",
        "",
        2,
    ]


def commission_report(sv: ServerVersion, e: Execution) -> Fields:
    realized = e.realized_pnl if e.realized_pnl is not None else UNSET_DOUBLE
    return [59, 1, e.exec_id, e.commission, "USD", realized, UNSET_DOUBLE, ""]


def position(sv: ServerVersion, account: str, p: Position) -> Fields:
    return [61, 3, account, *_contract11(p.contract), p.quantity, p.avg_cost]


def position_multi(sv: ServerVersion, req_id: int, account: str, p: Position) -> Fields:
    return [71, 1, req_id, account, *_contract11(p.contract), p.quantity, p.avg_cost, ""]


def portfolio_value(sv: ServerVersion, account: str, p: Position, mark: float) -> Fields:
    c = p.contract
    value = p.quantity * mark * c.multiplier
    unrealized = value - p.quantity * p.avg_cost
    return [
        7,
        8,
        c.con_id,
        c.symbol,
        c.sec_type,
        c.expiry,
        c.strike if c.sec_type == "OPT" else 0.0,
        c.right,
        str(c.multiplier) if c.sec_type == "OPT" else "",
        c.primary_exchange or "CBOE",
        c.currency,
        c.local_symbol,
        c.trading_class,
        p.quantity,
        mark,
        value,
        p.avg_cost,
        unrealized,
        0.0,
        account,
    ]


def _value_text(value: float | str) -> str:
    return f"{value:.2f}" if isinstance(value, float) else value


def account_value(
    sv: ServerVersion, account: str, key: str, value: float | str, currency: str = "USD"
) -> Fields:
    return [6, 2, key, _value_text(value), currency, account]


def account_update_multi(
    sv: ServerVersion, req_id: int, account: str, key: str, value: float | str, currency: str
) -> Fields:
    return [73, 1, req_id, account, "", key, _value_text(value), currency]


def account_summary(
    sv: ServerVersion, req_id: int, account: str, tag: str, value: float | str, currency: str
) -> Fields:
    return [63, 1, req_id, account, tag, _value_text(value), currency]


def pnl(sv: ServerVersion, req_id: int, daily: float, unrealized: float, realized: float) -> Fields:
    return [94, req_id, round(daily, 2), round(unrealized, 2), round(realized, 2)]


def pnl_single(
    sv: ServerVersion,
    req_id: int,
    position: float,
    daily: float,
    unrealized: float,
    realized: float,
    value: float,
) -> Fields:
    """Build pnlSingle (95); the position is a decimal from FRACTIONAL_SIZE_SUPPORT on."""
    return [
        95,
        req_id,
        sv.size(position),
        round(daily, 2),
        round(unrealized, 2),
        round(realized, 2),
        round(value, 2),
    ]


def contract_details(
    sv: ServerVersion,
    req_id: int,
    c: Contract,
    today: dt.date,
    long_name: str,
    industry: str,
    category: str,
    under_con_id: int,
) -> Fields:
    """Build contractData (10) for `sv`: before SIZE_RULES it has a version field after the
    message id and mdSizeMultiplier after minTick, and no size rules at the end."""
    trading, liquid = hours_strings(today, c.sec_type)
    is_opt = c.sec_type == "OPT"
    head: Fields = [10, 8] if sv.contract_data_has_version else [10]
    md_size_multiplier: Fields = [1] if sv.contract_data_has_version else []
    if sv.size_rules:
        size_rules: Fields = [1, 1, 1]  # minSize sizeIncrement suggestedSizeIncrement
    elif sv.contract_data_163_increment:
        size_rules = [1]
    else:
        size_rules = []
    return [
        *head,
        req_id,
        c.symbol,
        c.sec_type,
        c.expiry,
        c.strike if is_opt else 0.0,
        c.right,
        c.exchange,
        c.currency,
        c.local_symbol,
        c.symbol,  # marketName
        c.trading_class,
        c.con_id,
        0.01,
        *md_size_multiplier,
        str(c.multiplier) if is_opt else "",
        "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,GTC,IOC,LIT,"
        "LMT,MKT,MIT,NONALGO,OCA,STP,STPLMT,TRAIL,WHATIF",
        ",".join(valid_exchanges(c.sec_type)),
        1,
        under_con_id if is_opt else 0,
        long_name,
        c.primary_exchange,
        c.expiry[:6] if is_opt else "",
        industry,
        category,
        "",
        "US/Eastern",
        trading,
        liquid,
        "",
        "",
        0,  # evRule evMultiplier numSecIds
        1,
        c.symbol if is_opt else "",
        "STK" if is_opt else "",
        "26" if not is_opt else "32",
        c.expiry if is_opt else "",
        "COMMON" if not is_opt else "",
        *size_rules,
    ]
