"""Server-to-client layouts of market data: ticks, bars, option chains and symbol searches.

Like `messages`, each function returns the fields of one message for the negotiated version.
"""

from __future__ import annotations

import datetime as dt

from .instruments import EXCHANGE_TZ, EXCHANGE_ZONE, Contract
from .market import Bar
from .versions import ServerVersion
from .wire import Field

__all__ = [
    "bar_time",
    "head_timestamp",
    "historical_data",
    "market_data_type",
    "sec_def_opt_params",
    "sec_def_opt_params_end",
    "symbol_samples",
    "tick_generic",
    "tick_option_computation",
    "tick_price",
    "tick_size",
    "tick_snapshot_end",
]

Fields = list[Field]


def tick_price(sv: ServerVersion, req_id: int, tick: int, price: float, size: float) -> Fields:
    """Build tickPrice (1); the size is a decimal from FRACTIONAL_SIZE_SUPPORT on."""
    return [1, 6, req_id, tick, price, sv.size(size), 0]


def tick_size(sv: ServerVersion, req_id: int, tick: int, size: float) -> Fields:
    """Build tickSize (2); the size is a decimal from FRACTIONAL_SIZE_SUPPORT on."""
    return [2, 6, req_id, tick, sv.size(size)]


def tick_generic(sv: ServerVersion, req_id: int, tick: int, value: float) -> Fields:
    return [45, 6, req_id, tick, value]


def tick_option_computation(
    sv: ServerVersion,
    req_id: int,
    tick: int,
    vol: float,
    delta: float,
    price: float,
    gamma: float,
    vega: float,
    theta: float,
    und_price: float,
) -> Fields:
    """Build tickOptionComputation (21) in the PRICE_BASED_VOLATILITY layout (no version)."""
    return [21, req_id, tick, 1, vol, delta, price, 0.0, gamma, vega, theta, und_price]


def market_data_type(sv: ServerVersion, req_id: int, kind: int) -> Fields:
    return [58, 1, req_id, kind]


def tick_snapshot_end(sv: ServerVersion, req_id: int) -> Fields:
    return [57, 1, req_id]


def bar_time(sv: ServerVersion, epoch: int, format_date: int) -> str:
    """Format an intraday bar time: epoch seconds for formatDate 2, else exchange time, with
    the exchange's time zone from INSTRUMENT_TIMEZONE on (`yyyymmdd hh:mm:ss US/Eastern`)."""
    if format_date == 2:
        return str(epoch)
    local = dt.datetime.fromtimestamp(epoch, EXCHANGE_ZONE)
    if sv.instrument_timezone:
        return local.strftime("%Y%m%d %H:%M:%S ") + EXCHANGE_TZ
    return local.strftime("%Y%m%d  %H:%M:%S")


def _stamp(sv: ServerVersion, bar: Bar, format_date: int) -> str:
    return bar.date if bar.epoch is None else bar_time(sv, bar.epoch, format_date)


def historical_data(sv: ServerVersion, req_id: int, bars: list[Bar], format_date: int) -> Fields:
    """Build historicalData (17); volume is a decimal from FRACTIONAL_SIZE_SUPPORT on."""
    start = _stamp(sv, bars[0], format_date) if bars else ""
    end = _stamp(sv, bars[-1], format_date) if bars else ""
    out: Fields = [17, req_id, start, end, len(bars)]
    for b in bars:
        avg = (b.open + b.high + b.low + b.close) / 4
        out += [
            _stamp(sv, b, format_date),
            b.open,
            b.high,
            b.low,
            b.close,
            sv.size(b.volume),
            round(avg, 6),
            100,
        ]
    return out


def head_timestamp(sv: ServerVersion, req_id: int, stamp: str) -> Fields:
    return [88, req_id, stamp]


def sec_def_opt_params(
    sv: ServerVersion,
    req_id: int,
    exchange: str,
    under_con_id: int,
    trading_class: str,
    expiries: list[str],
    strikes: list[float],
) -> Fields:
    return [
        75,
        req_id,
        exchange,
        under_con_id,
        trading_class,
        "100",
        len(expiries),
        *expiries,
        len(strikes),
        *strikes,
    ]


def sec_def_opt_params_end(sv: ServerVersion, req_id: int) -> Fields:
    return [76, req_id]


def symbol_samples(sv: ServerVersion, req_id: int, found: list[tuple[Contract, str]]) -> Fields:
    """Build symbolSamples (79) for (stock, long name) pairs; from BOND_ISSUERID on each carries
    a description and an issuerId."""
    out: Fields = [79, req_id, len(found)]
    for c, long_name in found:
        out += [c.con_id, c.symbol, c.sec_type, c.primary_exchange, c.currency, 1, "OPT"]
        if sv.issuer_id:
            out += [long_name, ""]
    return out
