"""Sense: turn the live broker session into the swarm's MarketContext."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from data_lake import Contract
from skills.swarm_models import MarketContext, OptionView, SymbolView

from .broker import Broker

__all__ = ["MarketSensor", "SenseSpec"]

log = logging.getLogger("runtime.sense")


@dataclass(frozen=True, slots=True)
class SenseSpec:
    """What the cycle needs to look at: symbols, and for which ones an option band."""

    symbols: tuple[str, ...]
    option_symbols_min_iv_rank: float = 1.01  # 0..1; options are fetched above this IV rank
    min_dte: int = 5
    max_dte: int = 60
    max_expiries: int = 1
    strikes_below_spot: int = 8  # puts from just below spot downwards


@dataclass
class _DayCache:
    day: str = ""
    iv_rank: dict[str, tuple[float, float]] = field(default_factory=dict)
    sma20: dict[str, float] = field(default_factory=dict)
    chains: dict[str, tuple[list[str], list[float]]] = field(default_factory=dict)


class MarketSensor:
    """Collect quotes, IV, IV rank, 20-day averages, positions and candidate options."""

    def __init__(self, broker: Broker, quote_wait_s: float = 3.0) -> None:
        self.broker = broker
        self.quote_wait_s = quote_wait_s
        self._cache = _DayCache()
        self._left_out: dict[str, str] = {}  # symbol -> why the last context() left it out

    async def context(self, spec: SenseSpec, now: dt.datetime) -> MarketContext:
        day = now.strftime("%Y%m%d")
        if self._cache.day != day:
            self._cache = _DayCache(day)
        self._left_out = {}
        positions = {p.key: p.quantity for p in self.broker.positions()}
        views = await asyncio.gather(*(self._symbol(s, positions) for s in spec.symbols))
        symbols = tuple(v for v in views if v is not None)
        wanted = [v for v in symbols if v.iv_rank >= spec.option_symbols_min_iv_rank]
        option_lists = await asyncio.gather(*(self._puts(v, spec, now, positions) for v in wanted))
        options = tuple(o for lst in option_lists for o in lst)
        return MarketContext(now.isoformat(timespec="seconds"), symbols, options)

    async def _symbol(self, symbol: str, positions: dict[str, float]) -> SymbolView | None:
        b = self.broker
        contract = await b.qualify(Contract.stock(symbol))
        if contract is None:
            log.warning("sense: %s could not be qualified; left out of this cycle", symbol)
            self._left_out[symbol] = "not qualified"
            return None
        q = await b.quote(contract, max_wait_s=self.quote_wait_s)
        if q is None:
            log.warning("sense: no quote for %s; left out of this cycle", symbol)
            self._left_out[symbol] = "no quote"
            return None
        if symbol not in self._cache.iv_rank:
            found = await b.iv_rank(contract)
            self._cache.iv_rank[symbol] = found if found else (q.iv or 0.0, 0.0)
        if symbol not in self._cache.sma20:
            closes = (await b.daily_closes(contract, "1 M"))[-20:]
            self._cache.sma20[symbol] = sum(closes) / len(closes) if closes else q.last
        iv_hist, rank = self._cache.iv_rank[symbol]
        last = q.last or 0.5 * (q.bid + q.ask)
        return SymbolView(
            symbol,
            last,
            q.bid,
            q.ask,
            q.iv if q.iv is not None else iv_hist,
            rank,
            self._cache.sma20[symbol],
            positions.get(symbol, 0.0),
        )

    def missing(self, spec: SenseSpec) -> list[str]:
        """What the last context() (finished or cut short) did not load, one entry a symbol:
        'AAPL (IV rank history, 20-day closes)'. Empty when everything is there."""
        out = []
        for symbol in spec.symbols:
            parts = [self._left_out[symbol]] if symbol in self._left_out else []
            if symbol not in self._cache.iv_rank:
                parts.append("IV rank history")
            if symbol not in self._cache.sma20:
                parts.append("20-day closes")
            if parts:
                out.append(f"{symbol} ({', '.join(parts)})")
        return out

    def shortfall(self, spec: SenseSpec) -> str:
        """Why a context() cut short is incomplete: what is missing and, for history, IB's
        pacing as the broker counts it ('missing AAPL (IV rank history, 20-day closes);
        waiting 312.0 s for historical-data pacing (AAPL: 60 of 60 requests used in the last
        10 min, next slot in 312 s)')."""
        missing = self.missing(spec)
        what = f"missing {', '.join(missing)}" if missing else "nothing missing"
        pacing = self.broker.history_pacing()
        if pacing is None:
            pacing = f"history pacing: {self.broker.history_budget()}"
        return f"{what}; {pacing}"

    async def _puts(
        self, view: SymbolView, spec: SenseSpec, now: dt.datetime, positions: dict[str, float]
    ) -> Iterable[OptionView]:
        b = self.broker
        stock = await b.qualify(Contract.stock(view.symbol))
        if stock is None:
            return []
        if view.symbol not in self._cache.chains:
            self._cache.chains[view.symbol] = await b.option_chain(stock)
        expiries, strikes = self._cache.chains[view.symbol]
        today = now.date()

        def dte(e: str) -> int:
            return (dt.datetime.strptime(e, "%Y%m%d").date() - today).days

        usable = [e for e in expiries if spec.min_dte <= dte(e) <= spec.max_dte]
        usable.sort(key=lambda e: abs(dte(e) - 30))
        below = sorted((k for k in strikes if k < view.last), reverse=True)
        below = below[: spec.strikes_below_spot]
        out: list[OptionView] = []
        for expiry in usable[: spec.max_expiries]:
            contracts = await asyncio.gather(
                *(b.qualify(Contract.option(view.symbol, expiry, k, "P")) for k in below)
            )
            quotes = await asyncio.gather(
                *(b.quote(c, max_wait_s=self.quote_wait_s) for c in contracts if c is not None)
            )
            for k, q in zip(
                [k for k, c in zip(below, contracts, strict=True) if c is not None],
                quotes,
                strict=True,
            ):
                if q is None or q.delta is None:
                    continue
                key = Contract.option(view.symbol, expiry, k, "P").key
                out.append(
                    OptionView(
                        view.symbol,
                        expiry,
                        k,
                        "P",
                        q.bid,
                        q.ask,
                        q.delta,
                        dte(expiry),
                        positions.get(key, 0.0),
                    )
                )
        return out
