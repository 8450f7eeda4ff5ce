"""Historical bars for reqHistoricalData, derived from the market model's deterministic paths."""

from __future__ import annotations

import datetime as dt
import math
import random
import zlib
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .holidays import is_trading_day, session_hours
from .instruments import EXCHANGE_ZONE, Contract
from .market import HISTORY_DAYS, SECONDS_PER_TRADING_YEAR, Bar, MarketModel

__all__ = ["HistoryError", "build_bars", "first_bar_day", "parse_end"]

# the bar sizes IB accepts (reqHistoricalData's barSizeSetting), in seconds for intraday ones
BAR_SIZES: dict[str, int] = {
    "1 secs": 1,
    "5 secs": 5,
    "10 secs": 10,
    "15 secs": 15,
    "30 secs": 30,
    "1 min": 60,
    "2 mins": 120,
    "3 mins": 180,
    "5 mins": 300,
    "10 mins": 600,
    "15 mins": 900,
    "20 mins": 1200,
    "30 mins": 1800,
    "1 hour": 3600,
    "2 hours": 7200,
    "3 hours": 10800,
    "4 hours": 14400,
    "8 hours": 28800,
}
DAILY_BAR_STEPS = {"1 day": 1, "1 week": 5, "1 month": 21}
MAX_SESSIONS_BACK = 400
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


def parse_end(text: str, now: dt.datetime) -> dt.datetime:
    """Parse reqHistoricalData's endDateTime: "" (now), `yyyymmdd hh:mm:ss [zone]` (exchange
    time without a zone), `yyyymmdd-hh:mm:ss` (UTC) or `yyyymmdd`; a future end means now."""
    text = text.strip()
    if not text:
        return now
    try:
        if "-" in text[:9]:
            end = dt.datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=dt.UTC)
        elif len(text) == 8:
            end = dt.datetime.strptime(text, "%Y%m%d").replace(
                hour=23, minute=59, second=59, tzinfo=EXCHANGE_ZONE
            )
        else:
            day, clock, *zone = text.split()
            when = dt.datetime.strptime(day + clock, "%Y%m%d%H:%M:%S")
            end = when.replace(tzinfo=ZoneInfo(zone[0]) if zone else EXCHANGE_ZONE)
    except (ValueError, KeyError, ZoneInfoNotFoundError) as exc:
        raise HistoryError(
            162,
            f"{_HMDS}Historical data query end date/time string [{text}] is invalid. "
            "Format is 'YYYYMMDD{SPACE}hh:mm:ss[{SPACE}TMZ]'.",
        ) from exc
    return min(end, now)


def _trading_days(end: dt.date, count: int) -> list[dt.date]:
    days: list[dt.date] = []
    d = end
    while len(days) < count:
        if is_trading_day(d):
            days.append(d)
        d -= dt.timedelta(days=1)
    days.reverse()
    return days


def _last_trading_day(day: dt.date) -> dt.date:
    while not is_trading_day(day):
        day -= dt.timedelta(days=1)
    return day


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
    use_rth: bool = True,
    end: dt.datetime | None = None,
) -> list[Bar]:
    """Return the bars a reqHistoricalData asks for, oldest first, ending at `end` (now)."""
    end = now if end is None else min(end, now)
    if what not in SUPPORTED_WHAT:
        raise HistoryError(162, f"{_HMDS}Invalid whatToShow {what!r}")
    if contract.sec_type != "STK":
        raise HistoryError(
            162,
            "Historical Market Data Service error message:HMDS query returned "
            "no data (the paper gateway keeps history for stocks only)",
        )
    days = _duration_days(duration)
    size = " ".join(bar_size.split()).lower()
    is_vol = what in ("OPTION_IMPLIED_VOLATILITY", "HISTORICAL_VOLATILITY")
    if size in DAILY_BAR_STEPS:
        step = DAILY_BAR_STEPS[size]
        count = min(HISTORY_DAYS, max(1, math.ceil(days)))
        history = market.daily_history(contract.symbol, what)
        end_day = end.astimezone(EXCHANGE_ZONE).date()
        today = now.astimezone(EXCHANGE_ZONE).date()
        later = sum(
            1
            for k in range(1, (today - end_day).days + 1)
            if is_trading_day(end_day + dt.timedelta(days=k))
        )
        values = history[: len(history) - later][-count:]
        if not values:
            raise HistoryError(162, f"{_HMDS}HMDS query returned no data")
        dates = _trading_days(_last_trading_day(end_day), len(values))
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
    if size not in BAR_SIZES:
        raise HistoryError(162, f"{_HMDS}Historical data bar size setting is invalid: {bar_size!r}")
    bar_s = BAR_SIZES[size]
    starts = _bar_starts(end, bar_s, days, use_rth)
    rng = random.Random(market.seed * 7919 + zlib.crc32(f"{contract.symbol}|{bar_s}".encode()))
    level = market.iv(contract.symbol) if is_vol else market.price(contract.symbol)
    vol = 0.3 if is_vol else market.catalogue.stocks[contract.symbol].vol
    sd = vol * math.sqrt(bar_s / SECONDS_PER_TRADING_YEAR)
    closes = [level]
    for _ in starts:
        closes.append(closes[-1] / math.exp(rng.gauss(0.0, sd)))
    closes.reverse()
    out: list[Bar] = []
    for i, t in enumerate(starts, start=1):
        o, h, lo, c = _ohlc(closes[i - 1], closes[i], 0.0005)
        out.append(Bar("", o, h, lo, c, 0.0 if is_vol else 10_000.0, epoch=t))
    return out


def _bar_starts(end: dt.datetime, bar_s: int, days: float, use_rth: bool) -> list[int]:
    """Return the start times (epoch s) of the intraday bars before `end`, oldest first.

    Bars lie inside the sessions of trading days (regular hours when `use_rth`); a duration
    of N days covers the last N sessions that have started, seconds cover that many seconds
    of session time. Bars sit on the bar-size grid of the exchange day, the first one starting
    at the open (hourly: 09:30, 10:00, 11:00 ...). A bar that started before `end` (the one in
    progress when `end` is now) is included.
    """
    wanted = max(1, int(days * 23400 / bar_s)) if days < 1 else None
    sessions = max(1, math.ceil(days))
    end_s = int(end.timestamp())
    day = end.astimezone(EXCHANGE_ZONE).date()
    picked: list[int] = []
    used = 0
    for _ in range(MAX_SESSIONS_BACK):
        hours = session_hours(day, regular_only=use_rth)
        if hours is not None:
            opens = int(dt.datetime.combine(day, hours[0], EXCHANGE_ZONE).timestamp())
            closes = int(dt.datetime.combine(day, hours[1], EXCHANGE_ZONE).timestamp())
            last = min(closes, end_s)
            if last > opens:
                midnight = int(dt.datetime.combine(day, dt.time(0), EXCHANGE_ZONE).timestamp())
                aligned = midnight + -(-(opens - midnight) // bar_s) * bar_s  # next grid point
                starts = [
                    opens,
                    *range(aligned if aligned > opens else aligned + bar_s, last, bar_s),
                ]
                picked = starts + picked  # older sessions go first
                used += 1
                if wanted is not None and len(picked) >= wanted:
                    return picked[-min(wanted, MAX_INTRADAY_BARS) :]
                if wanted is None and used >= sessions:
                    break
        day -= dt.timedelta(days=1)
    return picked[-MAX_INTRADAY_BARS:]


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
    return _trading_days(now.astimezone(EXCHANGE_ZONE).date(), HISTORY_DAYS)[0]
