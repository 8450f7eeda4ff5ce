"""Historical bars for reqHistoricalData, derived from the market model's deterministic paths."""

from __future__ import annotations

import datetime as dt
import math
import random
import zlib

from .holidays import is_trading_day
from .instruments import Contract
from .market import HISTORY_DAYS, SECONDS_PER_TRADING_YEAR, Bar, MarketModel

__all__ = ["HistoryError", "build_bars", "first_bar_day"]

_UNIT_SECONDS = {"sec": 1, "secs": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600}
_DURATION_DAYS = {"S": 1 / 23400, "D": 1, "W": 5, "M": 21, "Y": 252}
SUPPORTED_WHAT = frozenset(
    {
        "TRADES",
        "MIDPOINT",
        "BID",
        "ASK",
        "BID_ASK",
        "ADJUSTED_LAST",
        "OPTION_IMPLIED_VOLATILITY",
        "HISTORICAL_VOLATILITY",
    }
)
MAX_INTRADAY_BARS = 5000
_HMDS = "Historical Market Data Service error message:"


class HistoryError(Exception):
    """The request cannot be answered: error 162 (HMDS), which ends the request in ib_insync
    and ib_async alike (321 would leave ib_async waiting)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _duration_days(duration: str) -> float:
    try:
        n_s, unit = duration.split()
        return int(n_s) * _DURATION_DAYS[unit.upper()]
    except (ValueError, KeyError) as exc:
        raise HistoryError(162, f"{_HMDS}Invalid duration {duration!r}") from exc


def _trading_days(end: dt.date, count: int) -> list[dt.date]:
    days: list[dt.date] = []
    d = end
    while len(days) < count:
        if is_trading_day(d):
            days.append(d)
        d -= dt.timedelta(days=1)
    days.reverse()
    return days


def _ohlc(prev: float, close: float, wiggle: float) -> tuple[float, float, float, float]:
    high = max(prev, close) * (1 + wiggle)
    low = min(prev, close) * (1 - wiggle)
    return round(prev, 4), round(high, 4), round(low, 4), round(close, 4)


def build_bars(
    market: MarketModel,
    contract: Contract,
    bar_size: str,
    duration: str,
    what: str,
    now: dt.datetime,
) -> list[Bar]:
    """Return the bars a reqHistoricalData asks for, oldest first."""
    if what not in SUPPORTED_WHAT:
        raise HistoryError(162, f"{_HMDS}Invalid whatToShow {what!r}")
    if contract.sec_type != "STK":
        raise HistoryError(
            162,
            "Historical Market Data Service error message:HMDS query returned "
            "no data (the paper gateway keeps history for stocks only)",
        )
    days = _duration_days(duration)
    parts = bar_size.split()
    if len(parts) != 2:
        raise HistoryError(162, f"{_HMDS}Invalid bar size {bar_size!r}")
    n_s, unit = parts
    unit = unit.lower()
    is_vol = what in ("OPTION_IMPLIED_VOLATILITY", "HISTORICAL_VOLATILITY")
    if unit in ("day", "days", "week", "weeks", "month", "months"):
        step = {"d": 1, "w": 5, "m": 21}[unit[0]] * int(n_s)
        count = min(HISTORY_DAYS, max(1, math.ceil(days)))
        values = market.daily_history(contract.symbol, what)[-count:]
        dates = _trading_days(now.date(), len(values))
        bars: list[Bar] = []
        for i in range(0, len(values), step):
            chunk = values[i : i + step]
            prev = values[i - 1] if i else chunk[0]
            o, h, lo, c = _ohlc(prev, chunk[-1], 0.0 if is_vol else 0.004)
            h, lo = max(h, *chunk), min(lo, *chunk)
            bars.append(
                Bar(
                    dates[i + len(chunk) - 1].strftime("%Y%m%d"),
                    o,
                    h,
                    lo,
                    c,
                    0.0 if is_vol else 1_000_000.0,
                )
            )
        return bars
    if unit not in _UNIT_SECONDS:
        raise HistoryError(162, f"{_HMDS}Invalid bar size {bar_size!r}")
    bar_s = int(n_s) * _UNIT_SECONDS[unit]
    count = min(MAX_INTRADAY_BARS, max(1, int(days * 23400 / bar_s)))
    rng = random.Random(market.seed * 7919 + zlib.crc32(f"{contract.symbol}|{bar_s}".encode()))
    level = market.iv(contract.symbol) if is_vol else market.price(contract.symbol)
    vol = 0.3 if is_vol else market.catalogue.stocks[contract.symbol].vol
    sd = vol * math.sqrt(bar_s / SECONDS_PER_TRADING_YEAR)
    closes = [level]
    for _ in range(count):
        closes.append(closes[-1] / math.exp(rng.gauss(0.0, sd)))
    closes.reverse()
    end = int(now.timestamp()) // bar_s * bar_s
    out: list[Bar] = []
    for i in range(1, len(closes)):
        t = end - (len(closes) - 1 - i) * bar_s
        o, h, lo, c = _ohlc(closes[i - 1], closes[i], 0.0005)
        out.append(Bar("", o, h, lo, c, 0.0 if is_vol else 10_000.0, epoch=t))
    return out


def first_bar_day(contract: Contract, what: str, now: dt.datetime) -> dt.date:
    """Return the earliest day reqHistoricalData can serve for `contract` (reqHeadTimeStamp)."""
    if what not in SUPPORTED_WHAT:
        raise HistoryError(162, f"{_HMDS}Invalid whatToShow {what!r}")
    if contract.sec_type != "STK":
        raise HistoryError(
            162,
            "Historical Market Data Service error message:HMDS query returned "
            "no data (the paper gateway keeps history for stocks only)",
        )
    return _trading_days(now.date(), HISTORY_DAYS)[0]
