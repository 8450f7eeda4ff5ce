"""Contract, market-data and history requests of a session (a mixin of Session)."""

from __future__ import annotations

import datetime as dt
import logging

from . import market_messages as mm
from . import messages as msg
from . import simple_messages as sm
from .history import HistoryError, build_bars, first_bar_day, parse_end
from .instruments import EXCHANGE_ZONE, Contract
from .realities import (
    COMPETING_SESSION,
    DELAYED_OPTION_TICKS,
    DELAYED_PRICE_TICKS,
    DELAYED_SIZE_TICKS,
    HISTORICAL_PACING,
    MAX_TICKERS,
    NOT_SUBSCRIBED,
    NOT_SUBSCRIBED_DELAYED_AVAILABLE,
    NOT_SUBSCRIBED_DISPLAYING_DELAYED,
    NOT_SUBSCRIBED_NO_DELAYED,
)
from .requests import (
    ContractRef,
    contradiction,
    parse_contract12,
    parse_historical,
    parse_mkt_data,
)
from .session_base import MarketSub, SessionBase, req_id_of
from .wire import FieldReader

__all__ = ["NO_DEFINITION", "MarketRequests"]

log = logging.getLogger("paper_gateway.session")
NO_DEFINITION = "No security definition has been found for the request"  # IB's text for 200


class MarketRequests(SessionBase):
    """Answer contract details, option chains, symbol search, quotes and bars."""

    def _resolve(self, ref: ContractRef) -> list[Contract]:
        """Return the listed contracts a request names; fields that contradict a listing
        (currency, exchange, primary exchange, multiplier) leave nothing, as IB's 200 does."""
        found = self.core.catalogue.match(
            ref.con_id, ref.symbol, ref.sec_type, ref.expiry, ref.strike, ref.right
        )
        return [c for c in found if contradiction(ref, c) is None]

    def _resolve_one(self, req_id: int, ref: ContractRef) -> Contract | None:
        """Return the one contract a request names, or answer 200 (none, or ambiguous)."""
        found = self._resolve(ref)
        if len(found) == 1:
            return found[0]
        if not found:
            self._no_definition(req_id, ref)
        else:
            self.send(
                msg.error(
                    self.sv,
                    req_id,
                    200,
                    f"The contract description specified for {ref.symbol} is ambiguous.",
                )
            )
        return None

    def _no_definition(self, req_id: int, ref: ContractRef) -> None:
        log.info("client %s: no security definition for %s", self.client_id, ref.describe())
        self.send(msg.error(self.sv, req_id, 200, NO_DEFINITION))

    def _req_contract_details(self, fields: list[str]) -> None:
        r = FieldReader(fields)
        r.skip(2)
        req_id = r.integer()
        ref = parse_contract12(r)
        found = self._resolve(ref)
        if not found:
            self._no_definition(req_id, ref)
            return
        for c in found:
            spec = self.core.catalogue.stocks[c.symbol]
            long_name = spec.long_name if c.sec_type == "STK" else f"{spec.long_name} OPTION"
            self.send(
                msg.contract_details(
                    self.sv,
                    req_id,
                    c,
                    self.core.now().date(),
                    long_name,
                    spec.industry,
                    spec.category,
                    spec.con_id,
                )
            )
        self.send(sm.contract_data_end(self.sv, req_id))

    def _req_sec_def_opt_params(self, fields: list[str]) -> None:
        r = FieldReader(fields)
        r.skip(1)
        req_id = r.integer()
        symbol = r.text().upper()
        r.skip(2)
        stock = self.core.catalogue.stock(symbol)
        if stock is None:
            self.send(msg.error(self.sv, req_id, 200, NO_DEFINITION))
            return
        expiries = self.core.catalogue.expiries[symbol]
        strikes = self.core.catalogue.strikes[symbol]
        for exchange in ("SMART", "CBOE"):
            self.send(
                mm.sec_def_opt_params(
                    self.sv, req_id, exchange, stock.con_id, symbol, expiries, strikes
                )
            )
        self.send(mm.sec_def_opt_params_end(self.sv, req_id))

    def _req_matching_symbols(self, fields: list[str]) -> None:
        """Answer reqMatchingSymbols with the listed stocks whose symbol or name matches."""
        r = FieldReader(fields)
        r.skip(1)
        req_id = r.integer()
        pattern = r.text().strip().upper()
        found: list[tuple[Contract, str]] = []
        if pattern:
            for spec in self.core.catalogue.stocks.values():
                if spec.symbol.startswith(pattern) or pattern in spec.long_name.upper():
                    stock = self.core.catalogue.stock(spec.symbol)
                    if stock is not None:
                        found.append((stock, spec.long_name))
        found.sort(key=lambda item: (not item[0].symbol.startswith(pattern), item[0].symbol))
        self.send(mm.symbol_samples(self.sv, req_id, found[:16]))

    def _req_head_timestamp(self, fields: list[str]) -> None:
        """Answer reqHeadTimeStamp with the first day of the gateway's daily history."""
        r = FieldReader(fields)
        r.skip(1)
        req_id = r.integer()
        ref = parse_contract12(r)
        r.skip(1)  # includeExpired
        r.skip(1)  # useRTH
        what = r.text().upper()
        format_date = r.integer(1)
        contract = self._resolve_one(req_id, ref)
        if contract is None:
            return
        try:
            first = first_bar_day(contract, what, self.core.now())
        except HistoryError as exc:
            self.send(msg.error(self.sv, req_id, exc.code, exc.message))
            return
        opening = dt.datetime.combine(first, dt.time(9, 30), EXCHANGE_ZONE)
        stamp = mm.bar_time(self.sv, int(opening.timestamp()), format_date)
        self.send(mm.head_timestamp(self.sv, req_id, stamp))

    def _req_market_data_type(self, fields: list[str]) -> None:
        """reqMarketDataType: 1 live, 2 frozen, 3 delayed, 4 delayed-frozen; a symbol with a
        live entitlement is served live whatever the type."""
        kind = req_id_of(fields, 2)
        if kind not in (1, 2, 3, 4):
            raise ValueError(f"invalid market data type {fields[2:3]}")
        self.md_type = kind

    def _req_mkt_data(self, fields: list[str]) -> None:
        req = parse_mkt_data(fields)
        contract = self._resolve_one(req.req_id, req.contract)
        if contract is None:
            return
        core = self.core
        if self.client_id in core.competing:
            self.send(msg.error(self.sv, req.req_id, 10197, COMPETING_SESSION))
            return
        delayed = False
        level = core.entitlements.get(contract.symbol, "live")
        if level != "live":
            if self.md_type in (1, 2):
                text = NOT_SUBSCRIBED
                if level == "delayed":
                    venue = contract.primary_exchange if contract.sec_type == "STK" else "OPRA"
                    text = NOT_SUBSCRIBED_DELAYED_AVAILABLE.format(
                        symbol=contract.symbol, venue=venue
                    )
                self.send(msg.error(self.sv, req.req_id, 354, text))
                return
            if level == "none":
                self.send(msg.error(self.sv, req.req_id, 10168, NOT_SUBSCRIBED_NO_DELAYED))
                return
            delayed = True
        if not req.snapshot and core.lines_in_use() >= core.config.max_market_data_lines:
            self.send(msg.error(self.sv, req.req_id, 101, MAX_TICKERS))
            return
        if delayed:
            self.send(msg.error(self.sv, req.req_id, 10167, NOT_SUBSCRIBED_DISPLAYING_DELAYED))
        sub = MarketSub(contract, req.generic_ticks, delayed=delayed)
        self.send(mm.market_data_type(self.sv, req.req_id, 3 if delayed else 1))
        if core.farms["market"]:  # quotes keep flowing during 1100 (README)
            self.push_quote(req.req_id, sub, force=True)
        if req.snapshot:
            self.send(mm.tick_snapshot_end(self.sv, req.req_id))
        else:
            self.subs.market[req.req_id] = sub

    def _cancel_mkt_data(self, fields: list[str]) -> None:
        self.subs.market.pop(req_id_of(fields, 2), None)

    def end_market_data(self, code: int, text: str) -> None:
        """End every subscription of this client with an error at its request id (10197)."""
        for req_id in list(self.subs.market):
            self.send(msg.error(self.sv, req_id, code, text))
        self.subs.market.clear()

    def push_quote(self, req_id: int, sub: MarketSub, force: bool = False) -> None:
        """Send the ticks of `sub` that changed since the last push."""
        core = self.core
        sv = self.sv
        now = core.now()
        if sub.delayed and sub.contract.sec_type == "STK":
            then = core.delayed.price(sub.contract.symbol, now)
            quote = core.market.stock_quote(sub.contract.symbol, then)
        else:
            quote = core.market.quote(sub.contract, now)
        last = None if force else sub.last
        if last == quote:
            return
        delayed = sub.delayed
        for tick, price, size in (
            (1, quote.bid, quote.bid_size),
            (2, quote.ask, quote.ask_size),
            (4, quote.last, 100.0),
            (9, quote.close, 0.0),
        ):
            old = (
                None
                if last is None
                else {1: last.bid, 2: last.ask, 4: last.last, 9: last.close}[tick]
            )
            if old != price:
                wire_tick = DELAYED_PRICE_TICKS[tick] if delayed else tick
                self.send(mm.tick_price(sv, req_id, wire_tick, price, size))
        if last is None:
            self.send(
                mm.tick_size(sv, req_id, DELAYED_SIZE_TICKS[8] if delayed else 8, quote.volume)
            )
        sub.last = quote
        symbol = sub.contract.symbol
        if sub.contract.sec_type == "STK":
            if "106" in sub.generic:
                self.send(mm.tick_generic(sv, req_id, 24, round(core.market.iv(symbol), 6)))
            if "104" in sub.generic:
                hv = core.market.daily_history(symbol, "HISTORICAL_VOLATILITY")[-1]
                self.send(mm.tick_generic(sv, req_id, 23, round(hv, 6)))
            return
        greeks, vol = core.market.option_greeks(sub.contract, now)
        und = core.market.price(symbol)
        for tick, opt_price in ((10, quote.bid), (11, quote.ask), (13, greeks.price)):
            self.send(
                mm.tick_option_computation(
                    sv,
                    req_id,
                    DELAYED_OPTION_TICKS[tick] if delayed else tick,
                    round(vol, 6),
                    round(greeks.delta, 6),
                    opt_price,
                    round(greeks.gamma, 6),
                    round(greeks.vega / 100, 6),
                    round(greeks.theta, 6),
                    und,
                )
            )

    def push_market(self) -> None:
        for req_id, sub in list(self.subs.market.items()):
            self.push_quote(req_id, sub)

    def _req_historical(self, fields: list[str]) -> None:
        req = parse_historical(fields)
        contract = self._resolve_one(req.req_id, req.contract)
        if contract is None:
            return
        now = self.core.now()
        if self.core.config.historical_pacing:
            contract_key = (contract.con_id, req.what)
            key = (contract_key, req.end, req.duration, req.bar_size, req.use_rth)
            if not self.core.pacer.admit(now, key, contract_key):
                log.info(
                    "client %s: historical pacing violation (req %s)", self.client_id, req.req_id
                )
                self.send(msg.error(self.sv, req.req_id, 162, HISTORICAL_PACING))
                return
        try:
            bars = build_bars(
                self.core.market,
                contract,
                req.bar_size,
                req.duration,
                req.what,
                now,
                req.use_rth,
                parse_end(req.end, now),
            )
        except HistoryError as exc:
            self.send(msg.error(self.sv, req.req_id, exc.code, exc.message))
            return
        self.send(mm.historical_data(self.sv, req.req_id, bars, req.format_date))
