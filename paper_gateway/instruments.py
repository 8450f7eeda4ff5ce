"""The paper gateway's instrument catalogue: stocks, their listed options, and trading hours."""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .holidays import is_trading_day, session_hours

__all__ = [
    "EXCHANGE_TZ",
    "EXCHANGE_ZONE",
    "STOCKS",
    "Catalogue",
    "Contract",
    "StockSpec",
    "hours_strings",
    "valid_exchanges",
]

STOCK_EXCHANGES = ("SMART", "NASDAQ", "NYSE", "ARCA", "ISLAND", "IEX", "BATS", "AMEX")
OPTION_EXCHANGES = ("SMART", "CBOE", "ISE", "AMEX", "PHLX", "BOX")

EXCHANGE_TZ = "US/Eastern"
EXCHANGE_ZONE = ZoneInfo(EXCHANGE_TZ)
OPTION_MULTIPLIER = 100


@dataclass(frozen=True, slots=True)
class StockSpec:
    """A listed stock with the parameters of its simulated market."""

    symbol: str
    con_id: int
    primary_exchange: str
    long_name: str
    industry: str
    category: str
    price: float
    vol: float  # annualised realised volatility of the price path
    iv_low: float  # one-year range of implied volatility
    iv_high: float
    iv_rank: float  # where today's IV sits in that range, 0..1


STOCKS: tuple[StockSpec, ...] = (
    StockSpec(
        "NVDA",
        4815747,
        "NASDAQ",
        "NVIDIA CORP",
        "Technology",
        "Semiconductors",
        182.0,
        0.50,
        0.32,
        0.78,
        0.91,
    ),
    StockSpec(
        "AMD",
        4391,
        "NASDAQ",
        "ADVANCED MICRO DEVICES",
        "Technology",
        "Semiconductors",
        158.0,
        0.52,
        0.35,
        0.72,
        0.84,
    ),
    StockSpec(
        "TSLA",
        76792991,
        "NASDAQ",
        "TESLA INC",
        "Consumer, Cyclical",
        "Auto Manufacturers",
        241.0,
        0.60,
        0.40,
        0.95,
        0.62,
    ),
    StockSpec(
        "AAPL",
        265598,
        "NASDAQ",
        "APPLE INC",
        "Technology",
        "Computers",
        228.0,
        0.25,
        0.17,
        0.38,
        0.35,
    ),
    StockSpec(
        "MSFT",
        272093,
        "NASDAQ",
        "MICROSOFT CORP",
        "Technology",
        "Software",
        415.0,
        0.24,
        0.16,
        0.34,
        0.42,
    ),
    StockSpec(
        "SPY",
        756733,
        "ARCA",
        "SPDR S&P 500 ETF TRUST",
        "Funds",
        "Equity Fund",
        560.0,
        0.15,
        0.11,
        0.30,
        0.28,
    ),
    StockSpec(
        "JPM",
        1520593,
        "NYSE",
        "JPMORGAN CHASE & CO",
        "Financial",
        "Banks",
        212.0,
        0.22,
        0.17,
        0.36,
        0.93,
    ),
    StockSpec(
        "BAC",
        10098,
        "NYSE",
        "BANK OF AMERICA CORP",
        "Financial",
        "Banks",
        39.5,
        0.26,
        0.20,
        0.42,
        0.55,
    ),
    StockSpec(
        "GS",
        4627828,
        "NYSE",
        "GOLDMAN SACHS GROUP INC",
        "Financial",
        "Banks",
        495.0,
        0.27,
        0.19,
        0.41,
        0.88,
    ),
    StockSpec(
        "QQQ",
        320227571,
        "NASDAQ",
        "INVESCO QQQ TRUST SERIES 1",
        "Funds",
        "Equity Fund",
        480.0,
        0.19,
        0.14,
        0.35,
        0.31,
    ),
    StockSpec(
        "META",
        107113386,
        "NASDAQ",
        "META PLATFORMS INC-CLASS A",
        "Communications",
        "Internet",
        520.0,
        0.38,
        0.26,
        0.60,
        0.47,
    ),
    StockSpec(
        "AMZN",
        3691937,
        "NASDAQ",
        "AMAZON.COM INC",
        "Communications",
        "Internet",
        185.0,
        0.32,
        0.22,
        0.52,
        0.39,
    ),
)


@dataclass(frozen=True, slots=True)
class Contract:
    """A fully specified contract as the gateway knows it (one conId)."""

    con_id: int
    symbol: str
    sec_type: str  # STK | OPT
    expiry: str = ""  # YYYYMMDD for options
    strike: float = 0.0
    right: str = ""  # C | P
    multiplier: int = 1
    exchange: str = "SMART"
    primary_exchange: str = ""
    currency: str = "USD"

    @property
    def local_symbol(self) -> str:
        if self.sec_type != "OPT":
            return self.symbol
        return f"{self.symbol:<6}{self.expiry[2:]}{self.right}{round(self.strike * 1000):08d}"

    @property
    def trading_class(self) -> str:
        return self.symbol if self.sec_type == "OPT" else "NMS"

    @property
    def key(self) -> str:
        """A short human-readable identity, used in the admin channel and logs."""
        if self.sec_type != "OPT":
            return self.symbol
        return f"{self.symbol} {self.expiry} {self.strike:g}{self.right}"


def _option_con_id(symbol: str, expiry: str, strike: float, right: str) -> int:
    digest = zlib.crc32(f"{symbol}|{expiry}|{strike:.4f}|{right}".encode())
    return 600_000_000 + digest % 1_000_000_000


def _strike_step(price: float) -> float:
    if price < 25:
        return 0.5
    if price < 100:
        return 1.0
    if price < 250:
        return 2.5
    return 5.0


def _fridays(today: dt.date, count: int) -> list[dt.date]:
    day = today + dt.timedelta(days=(4 - today.weekday()) % 7 or 7)
    return [day + dt.timedelta(weeks=i) for i in range(count)]


def _last_trading_day_on_or_before(day: dt.date) -> dt.date:
    """Move an expiry that falls on a holiday (e.g. Good Friday) to the trading day before."""
    while not is_trading_day(day):
        day -= dt.timedelta(days=1)
    return day


def _monthly(today: dt.date, count: int) -> list[dt.date]:
    """Third Fridays of the coming months."""
    out: list[dt.date] = []
    year, month = today.year, today.month
    while len(out) < count:
        first = dt.date(year, month, 1)
        third = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
        if third > today:
            out.append(third)
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return out


def valid_exchanges(sec_type: str) -> tuple[str, ...]:
    """Return the exchanges a contract of `sec_type` can be routed to (contract details)."""
    return OPTION_EXCHANGES if sec_type == "OPT" else STOCK_EXCHANGES


def hours_strings(today: dt.date, sec_type: str, days: int = 7) -> tuple[str, str]:
    """Return (tradingHours, liquidHours) in IB's format for the coming days (exchange time).

    Weekends and exchange holidays are CLOSED; early-close days end at 13:00 (17:00 extended).
    """
    trading: list[str] = []
    liquid: list[str] = []
    for i in range(days):
        d = today + dt.timedelta(days=i)
        ds = d.strftime("%Y%m%d")
        regular = session_hours(d, regular_only=True)
        extended = session_hours(d, regular_only=sec_type == "OPT")
        if regular is None or extended is None:
            trading.append(f"{ds}:CLOSED")
            liquid.append(f"{ds}:CLOSED")
            continue
        trading.append(f"{ds}:{extended[0]:%H%M}-{ds}:{extended[1]:%H%M}")
        liquid.append(f"{ds}:{regular[0]:%H%M}-{ds}:{regular[1]:%H%M}")
    return ";".join(trading), ";".join(liquid)


class Catalogue:
    """Every contract the gateway lists, with lookups by conId and by description."""

    def __init__(self, today: dt.date, stocks: tuple[StockSpec, ...] = STOCKS) -> None:
        self.today = today
        self.stocks = {s.symbol: s for s in stocks}
        self._by_id: dict[int, Contract] = {}
        self.expiries: dict[str, list[str]] = {}
        self.strikes: dict[str, list[float]] = {}
        for spec in stocks:
            stock = Contract(
                spec.con_id, spec.symbol, "STK", primary_exchange=spec.primary_exchange
            )
            self._by_id[stock.con_id] = stock
            expiries = sorted(
                {
                    _last_trading_day_on_or_before(d).strftime("%Y%m%d")
                    for d in _fridays(today, 6) + _monthly(today, 4)
                }
            )
            step = _strike_step(spec.price)
            centre = round(spec.price / step) * step
            strikes = [round(centre + step * k, 4) for k in range(-20, 21) if centre + step * k > 0]
            self.expiries[spec.symbol] = expiries
            self.strikes[spec.symbol] = strikes

    def stock(self, symbol: str) -> Contract | None:
        spec = self.stocks.get(symbol.upper())
        return self._by_id.get(spec.con_id) if spec else None

    def by_con_id(self, con_id: int) -> Contract | None:
        return self._by_id.get(con_id)

    def option(self, symbol: str, expiry: str, strike: float, right: str) -> Contract | None:
        """Return the listed option, or None when the expiry, strike or right is not listed."""
        symbol = symbol.upper()
        right = {"CALL": "C", "PUT": "P"}.get(right.upper(), right.upper())
        spec = self.stocks.get(symbol)
        if spec is None or right not in ("C", "P") or expiry not in self.expiries[symbol]:
            return None
        if not any(abs(strike - s) < 1e-6 for s in self.strikes[symbol]):
            return None
        con_id = _option_con_id(symbol, expiry, strike, right)
        found = self._by_id.get(con_id)
        if found is None:
            found = Contract(
                con_id,
                symbol,
                "OPT",
                expiry,
                float(strike),
                right,
                OPTION_MULTIPLIER,
                primary_exchange="",
            )
            self._by_id[con_id] = found
        return found

    def match(
        self, con_id: int, symbol: str, sec_type: str, expiry: str, strike: float, right: str
    ) -> list[Contract]:
        """Resolve a request's contract description to the listed contracts it names."""
        if con_id:
            found = self.by_con_id(con_id)
            return [found] if found else []
        sec_type = sec_type.upper() or "STK"
        if sec_type == "STK":
            stock = self.stock(symbol)
            return [stock] if stock else []
        if sec_type != "OPT" or symbol.upper() not in self.stocks:
            return []
        sym = symbol.upper()
        expiries = [e for e in self.expiries[sym] if not expiry or e.startswith(expiry)]
        strikes = [s for s in self.strikes[sym] if not strike or abs(s - strike) < 1e-6]
        rights = [right.upper()[:1]] if right else ["C", "P"]
        out: list[Contract] = []
        for e in expiries:
            for s in strikes:
                for r in rights:
                    opt = self.option(sym, e, s, r)
                    if opt:
                        out.append(opt)
        return out
