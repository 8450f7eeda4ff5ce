"""A deterministic market model: per-symbol GBM prices, mean-reverting IV, option quotes by BS.

Everything derives from one seed, so two gateways with the same seed and the same sequence of
steps and admin commands produce the same quotes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import zlib
from dataclasses import dataclass

from .instruments import Catalogue, Contract, StockSpec
from .pricing import OptionGreeks, bs_greeks

__all__ = ["Bar", "MarketModel", "Quote"]

RISK_FREE = 0.045
SECONDS_PER_TRADING_YEAR = 252 * 6.5 * 3600
HISTORY_DAYS = 260


@dataclass(frozen=True, slots=True)
class Quote:
    bid: float
    ask: float
    last: float
    close: float
    bid_size: float
    ask_size: float
    volume: float = 0.0  # today's volume

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask)


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: daily bars carry `date` (yyyymmdd), intraday bars their start in `epoch`."""

    date: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    epoch: int | None = None


@dataclass(slots=True)
class _SymbolState:
    spec: StockSpec
    price: float
    close: float
    iv: float
    rng: random.Random
    iv_history: list[float]
    close_history: list[float]


def _cents(x: float) -> float:
    return round(x + 1e-9, 2)


def _ou_path(rng: random.Random, n: int) -> list[float]:
    x, out = 0.0, []
    for _ in range(n):
        x += -0.05 * x + rng.gauss(0.0, 1.0)
        out.append(x)
    return out


class MarketModel:
    """Prices for every listed contract; `step()` advances time, `set_price()` overrides."""

    def __init__(self, catalogue: Catalogue, seed: int = 7) -> None:
        self.catalogue = catalogue
        self.seed = seed
        self.version = 0  # bumped on every price change; sessions push quotes when it moves
        self._sym: dict[str, _SymbolState] = {}
        for spec in catalogue.stocks.values():
            rng = random.Random(seed * 1_000_003 + zlib.crc32(spec.symbol.encode()))
            raw = _ou_path(rng, HISTORY_DAYS)
            lo_raw, hi_raw = min(raw), max(raw)
            span = (hi_raw - lo_raw) or 1.0
            ivs = [spec.iv_low + (v - lo_raw) / span * (spec.iv_high - spec.iv_low) for v in raw]
            # glide the last days to today's IV, so IV rank is the instrument's designed value
            target = spec.iv_low + spec.iv_rank * (spec.iv_high - spec.iv_low)
            glide = 10
            start = ivs[-glide - 1]
            for k in range(1, glide + 1):
                ivs[-glide - 1 + k] = start + (target - start) * k / glide
            closes = [spec.price]
            daily = spec.vol / math.sqrt(252)
            for _ in range(HISTORY_DAYS - 1):
                closes.append(closes[-1] / math.exp(rng.gauss(-0.5 * daily * daily, daily)))
            closes.reverse()
            self._sym[spec.symbol] = _SymbolState(
                spec, spec.price, closes[-2], ivs[-1], rng, ivs, closes
            )

    # --- underlying ----------------------------------------------------------------------
    def symbols(self) -> list[str]:
        return list(self._sym)

    def price(self, symbol: str) -> float:
        return self._sym[symbol].price

    def iv(self, symbol: str) -> float:
        return self._sym[symbol].iv

    def set_price(self, symbol: str, price: float) -> None:
        """Set the last/mid price of a symbol (admin `set_price`)."""
        if not math.isfinite(price) or price <= 0:
            raise ValueError(f"price must be a positive number, got {price!r}")
        state = self._sym.get(symbol.upper())
        if state is None:
            raise KeyError(symbol)
        state.price = price
        self.version += 1

    def step(self, seconds: float) -> None:
        """Advance every symbol's price (GBM) and IV (mean-reverting) by `seconds` of trading."""
        if seconds <= 0:
            return
        dt_y = seconds / SECONDS_PER_TRADING_YEAR
        for state in self._sym.values():
            sigma = state.spec.vol
            shock = state.rng.gauss(0.0, 1.0)
            state.price *= math.exp(-0.5 * sigma * sigma * dt_y + sigma * math.sqrt(dt_y) * shock)
            state.price = max(state.price, 0.01)
            target = state.iv_history[-1]
            state.iv += (
                2.0 * (target - state.iv) * dt_y
                + 0.5 * math.sqrt(dt_y) * state.rng.gauss(0, 1) * state.iv
            )
            state.iv = min(max(state.iv, 0.05), 3.0)
        self.version += 1

    def stock_quote(self, symbol: str, price: float | None = None) -> Quote:
        """Quote a stock at its price now, or at `price` (the delayed feed's older price)."""
        state = self._sym[symbol]
        mid = state.price if price is None else price
        half = max(0.01, _cents(mid * 0.0001))
        bid = _cents(mid - half)
        ask = _cents(mid + half)
        if ask <= bid:
            ask = _cents(bid + 0.01)
        return Quote(bid, ask, _cents(mid), _cents(state.close), 500.0, 400.0, 1_250_000.0)

    # --- options -------------------------------------------------------------------------
    def years_to_expiry(self, expiry: str, now: dt.datetime) -> float:
        exp = dt.datetime.strptime(expiry, "%Y%m%d").replace(hour=21, tzinfo=dt.UTC)
        return max((exp - now).total_seconds(), 0.0) / (365.0 * 86400.0)

    def option_greeks(self, contract: Contract, now: dt.datetime) -> tuple[OptionGreeks, float]:
        """Return an option's model Greeks and the IV used (per-underlying IV with a skew)."""
        state = self._sym[contract.symbol]
        t = self.years_to_expiry(contract.expiry, now)
        moneyness = math.log(contract.strike / state.price)
        vol = max(0.05, state.iv * (1.0 - 0.25 * moneyness + 0.6 * moneyness * moneyness))
        return bs_greeks(state.price, contract.strike, t, vol, RISK_FREE, contract.right), vol

    def option_quote(self, contract: Contract, now: dt.datetime) -> Quote:
        greeks, _ = self.option_greeks(contract, now)
        theo = greeks.price
        half = max(0.01, _cents(theo * 0.015))
        bid = max(0.0, _cents(theo - half))
        ask = max(0.01, _cents(theo + half))
        if ask <= bid:
            ask = _cents(bid + 0.01)
        return Quote(bid, ask, _cents(max(theo, 0.0)), _cents(max(theo, 0.0)), 20.0, 20.0, 350.0)

    def quote(self, contract: Contract, now: dt.datetime) -> Quote:
        if contract.sec_type == "OPT":
            return self.option_quote(contract, now)
        return self.stock_quote(contract.symbol)

    # --- history -------------------------------------------------------------------------
    def daily_history(self, symbol: str, what: str) -> list[float]:
        """Closing values for the last HISTORY_DAYS trading days (today's value last)."""
        state = self._sym[symbol]
        if what == "OPTION_IMPLIED_VOLATILITY":
            return [*state.iv_history[:-1], state.iv]
        if what == "HISTORICAL_VOLATILITY":
            closes = state.close_history
            out = []
            for i in range(len(closes)):
                window = closes[max(0, i - 20) : i + 1]
                rets = [math.log(b / a) for a, b in itertools.pairwise(window)]
                if len(rets) < 2:
                    out.append(state.spec.vol)
                    continue
                mean = sum(rets) / len(rets)
                var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
                out.append(math.sqrt(var * 252))
            return out
        return [*state.close_history[:-1], state.price]
