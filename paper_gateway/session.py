"""One API client connection: handshake, startApi, request dispatch, subscriptions, pacing."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import market_messages as mm
from . import messages as msg
from .account import ACCOUNT_TAGS, value_rows
from .engine import OrderSpec
from .history import HistoryError, build_bars, first_bar_day
from .instruments import EXCHANGE_ZONE, Contract
from .market import Quote
from .requests import (
    ContractRef,
    contradiction,
    parse_contract12,
    parse_exec_filter,
    parse_historical,
    parse_mkt_data,
    parse_place_order,
)
from .unsupported import UNSUPPORTED, EmptyAnswer, Ignored
from .versions import MAX_SERVER_VERSION, ServerVersion, VersionRefused, negotiate
from .wire import (
    Field,
    FieldReader,
    FrameDecoder,
    ProtocolError,
    encode_fields,
    frame,
    split_fields,
)

if TYPE_CHECKING:
    from .server import GatewayCore

__all__ = ["Session"]

log = logging.getLogger("paper_gateway.session")
NO_DEFINITION = "No security definition has been found for the request"  # IB's text for 200


@dataclass(slots=True)
class MarketSub:
    contract: Contract
    generic: frozenset[str]
    last: Quote | None = None


@dataclass(slots=True)
class Subscriptions:
    market: dict[int, MarketSub] = field(default_factory=dict)
    account_updates: bool = False
    positions: bool = False
    pnl: set[int] = field(default_factory=set)
    pnl_single: dict[int, int] = field(default_factory=dict)
    account_summary: set[int] = field(default_factory=set)
    account_multi: set[int] = field(default_factory=set)


class Session:
    """Serve one TCP client until it disconnects or the gateway drops it."""

    def __init__(
        self, core: GatewayCore, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.core = core
        self.reader = reader
        self.writer = writer
        self.client_id: int | None = None
        self.version = 0  # negotiated server version; 0 until the handshake
        self.sv = ServerVersion.at(MAX_SERVER_VERSION)
        self.subs = Subscriptions()
        self.closed = False
        self._decoder = FrameDecoder()
        self._backlog: list[bytes] = []
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._refused = 0
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._handlers: dict[int, Callable[[list[str]], None]] = {
            1: self._req_mkt_data,
            2: self._cancel_mkt_data,
            3: self._place_order,
            4: self._cancel_order,
            5: self._req_open_orders,
            6: self._req_account_updates,
            7: self._req_executions,
            8: self._req_ids,
            9: self._req_contract_details,
            14: self._ignore,
            15: self._ignore,
            16: self._req_all_open_orders,
            17: self._req_managed_accounts,
            20: self._req_historical,
            25: self._ignore,
            49: self._req_current_time,
            58: self._req_global_cancel,
            59: self._ignore,
            61: self._req_positions,
            62: self._req_account_summary,
            63: self._cancel_account_summary,
            64: self._cancel_positions,
            71: self._ignore,
            74: self._req_positions_multi,
            75: self._ignore,
            76: self._req_account_updates_multi,
            77: self._cancel_account_updates_multi,
            78: self._req_sec_def_opt_params,
            81: self._req_matching_symbols,
            87: self._req_head_timestamp,
            92: self._req_pnl,
            93: self._cancel_pnl,
            94: self._req_pnl_single,
            95: self._cancel_pnl_single,
            99: self._req_completed_orders,
        }

    # --- transport -------------------------------------------------------------------------
    def send(self, fields: list[Field]) -> None:
        if self.closed:
            return
        data = frame(encode_fields(fields))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("client %s >>> %s", self.client_id, ",".join(str(f) for f in fields))
        if self.core.frozen:
            self._backlog.append(data)
            return
        self.writer.write(data)

    def flush_backlog(self) -> None:
        if self.closed:
            return
        for data in self._backlog:
            self.writer.write(data)
        self._backlog.clear()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    async def run(self) -> None:
        try:
            while not self.closed:
                data = await self.reader.read(65536)
                if not data:
                    break
                for payload in self._decoder.feed(data):
                    await self.core.wait_thawed()
                    if self.closed:
                        return
                    self._on_frame(payload)
        except (ProtocolError, ConnectionError) as exc:
            log.warning("client %s (%s) dropped: %s", self.client_id, self.peer, exc)
        except Exception:
            log.exception(
                "client %s (%s) dropped after an internal error", self.client_id, self.peer
            )
        finally:
            self.close()
            self.core.session_closed(self)

    def _handshake(self, payload: bytes) -> None:
        """Answer the version range with the highest common version, or refuse it (506)."""
        try:
            version = negotiate(payload.decode(errors="replace"))
        except VersionRefused as exc:
            log.warning("refusing %s: %s", self.peer, exc)
            # the layout every client reads before it has a server version: no advanced JSON
            self.writer.write(frame(encode_fields([4, 2, -1, 506, f"Unsupported version: {exc}"])))
            self.close()
            return
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        self.version = version
        self.sv = ServerVersion.at(version)
        when = self.core.now().strftime("%Y%m%d %H:%M:%S") + " UTC"
        self.writer.write(frame(encode_fields([version, when])))

    def _on_frame(self, payload: bytes) -> None:
        if not self.version:
            self._handshake(payload)
            return
        fields = split_fields(payload)
        if not fields:
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("client %s <<< %s", self.client_id, ",".join(fields))
        msg_id = int(fields[0]) if fields[0].isdigit() else -1
        if self.client_id is None:
            if msg_id != 71:
                raise ProtocolError(f"expected startApi, got message {fields[0]!r}")
            self._start_api(fields)
            return
        if not self._pace_ok():
            req_id = _req_id_of(fields, 2 if msg_id != 3 else 1)
            self.send(
                msg.error(
                    self.sv,
                    req_id,
                    100,
                    "Max rate of messages per second has been exceeded:"
                    f"max={self.core.config.pacing_per_s} rec={self._refused}",
                )
            )
            return
        handler = self._handlers.get(msg_id)
        try:
            if handler is None:
                self._unsupported(msg_id, fields)
            else:
                handler(fields)
        except (ProtocolError, ValueError) as exc:
            log.warning("client %s: bad message %s: %s", self.client_id, fields[:3], exc)
            self.send(
                msg.error(
                    self.sv,
                    _req_id_of(fields, 1),
                    321,
                    f"Error validating request.-'{fields[0]}' : {exc}",
                )
            )
        except Exception as exc:  # a gateway bug must not drop the client or desync the stream
            log.exception("client %s: internal error handling %s", self.client_id, fields[:3])
            self.send(
                msg.error(
                    self.sv,
                    _req_id_of(fields, 1),
                    321,
                    f"Error validating request.-'{fields[0]}' : internal error "
                    f"{type(exc).__name__}",
                )
            )

    def _pace_ok(self) -> bool:
        """Token bucket: `pacing_per_s` messages of burst, refilled at `pacing_per_s` a second."""
        limit = self.core.config.pacing_per_s
        if limit <= 0:
            return True
        now = time.monotonic()
        if self._tokens_at:
            self._tokens = min(float(limit), self._tokens + (now - self._tokens_at) * limit)
        else:
            self._tokens = float(limit)
        self._tokens_at = now
        if self._tokens < 1.0:
            self._refused += 1
            return False
        self._tokens -= 1.0
        return True

    def _start_api(self, fields: list[str]) -> None:
        r = FieldReader(fields)
        r.skip(2)
        client_id = r.integer()
        if not self.core.claim_client_id(client_id, self):
            log.warning("client id %s already in use; refusing %s", client_id, self.peer)
            self.writer.write(
                frame(
                    encode_fields(
                        msg.error(
                            self.sv,
                            -1,
                            326,
                            "Unable to connect as the client id is already in use. "
                            "Retry with a unique client id.",
                        )
                    )
                )
            )
            self.close()
            return
        self.client_id = client_id
        log.info(
            "client %s connected from %s (server version %s)", client_id, self.peer, self.version
        )
        self.send([15, 1, self.core.config.account])
        self.send([9, 1, self.core.next_valid_id()])
        for code, text in (
            (2104, "Market data farm connection is OK:usfarm"),
            (2106, "HMDS data farm connection is OK:ushmds"),
            (2158, "Sec-def data farm connection is OK:secdefnj"),
        ):
            self.send(msg.error(self.sv, -1, code, text))

    def _unsupported(self, msg_id: int, fields: list[str]) -> None:
        """Answer a request the gateway does not serve as `unsupported.UNSUPPORTED` says."""
        what = UNSUPPORTED.get(msg_id)
        if what is None:
            log.warning("client %s: unknown message %s", self.client_id, msg_id)
            self.send(
                msg.error(
                    self.sv,
                    -1,
                    321,
                    f"Error validating request.-'{msg_id}' : cause - unknown message id",
                )
            )
            return
        if isinstance(what, Ignored):
            log.debug("client %s: ignored request %s", self.client_id, what.name)
            return
        log.warning("client %s: unsupported request %s", self.client_id, what.name)
        if isinstance(what, EmptyAnswer):
            answer: list[Field] = list(what.fields)
            if what.req_id_index is not None:
                answer[1] = _req_id_of(fields, what.req_id_index)
            self.send(answer)
        else:
            idx = what.req_id_index
            req_id = -1 if idx is None else _req_id_of(fields, idx)
            self.send(msg.error(self.sv, req_id, what.code, what.text))

    def _ignore(self, fields: list[str]) -> None:
        return None

    # --- contracts and market data -----------------------------------------------------------
    def _resolve(self, ref: ContractRef) -> list[Contract]:
        """Return the listed contracts a request names; fields that contradict a listing
        (currency, exchange, primary exchange, multiplier) leave nothing, as IB's 200 does."""
        found = self.core.catalogue.match(
            ref.con_id, ref.symbol, ref.sec_type, ref.expiry, ref.strike, ref.right
        )
        return [c for c in found if contradiction(ref, c) is None]

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
        self.send([52, 1, req_id])

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
        found = self._resolve(ref)
        if len(found) != 1:
            self._no_definition(req_id, ref)
            return
        try:
            first = first_bar_day(found[0], what, self.core.now())
        except HistoryError as exc:
            self.send(msg.error(self.sv, req_id, exc.code, exc.message))
            return
        opening = dt.datetime.combine(first, dt.time(9, 30), EXCHANGE_ZONE)
        stamp = mm.bar_time(self.sv, int(opening.timestamp()), format_date)
        self.send(mm.head_timestamp(self.sv, req_id, stamp))

    def _req_mkt_data(self, fields: list[str]) -> None:
        req = parse_mkt_data(fields)
        found = self._resolve(req.contract)
        if len(found) != 1:
            self._no_definition(req.req_id, req.contract)
            return
        sub = MarketSub(found[0], req.generic_ticks)
        self.send(mm.market_data_type(self.sv, req.req_id, 1))  # real-time
        self.push_quote(req.req_id, sub, force=True)
        if req.snapshot:
            self.send(mm.tick_snapshot_end(self.sv, req.req_id))
        else:
            self.subs.market[req.req_id] = sub

    def _cancel_mkt_data(self, fields: list[str]) -> None:
        self.subs.market.pop(_req_id_of(fields, 2), None)

    def push_quote(self, req_id: int, sub: MarketSub, force: bool = False) -> None:
        """Send the ticks of `sub` that changed since the last push."""
        core = self.core
        sv = self.sv
        now = core.now()
        quote = core.market.quote(sub.contract, now)
        last = None if force else sub.last
        if last == quote:
            return
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
                self.send(mm.tick_price(sv, req_id, tick, price, size))
        if last is None:
            self.send(mm.tick_size(sv, req_id, 8, quote.volume))
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
                    tick,
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
        found = self._resolve(req.contract)
        if len(found) != 1:
            self._no_definition(req.req_id, req.contract)
            return
        try:
            bars = build_bars(
                self.core.market,
                found[0],
                req.bar_size,
                req.duration,
                req.what,
                self.core.now(),
                req.use_rth,
            )
        except HistoryError as exc:
            self.send(msg.error(self.sv, req.req_id, exc.code, exc.message))
            return
        self.send(mm.historical_data(self.sv, req.req_id, bars, req.format_date))

    # --- orders ----------------------------------------------------------------------------
    def _place_order(self, fields: list[str]) -> None:
        assert self.client_id is not None
        req = parse_place_order(fields)
        if not req.contract.exchange:
            self.send(
                msg.error(
                    self.sv,
                    req.order_id,
                    321,
                    "Error validating request.-'bW' : cause - Missing order exchange",
                )
            )
            return
        found = self._resolve(req.contract)
        if len(found) != 1:
            self._no_definition(req.order_id, req.contract)
            return
        spec = OrderSpec(
            found[0],
            req.action,
            req.quantity,
            req.order_type,
            req.lmt_price,
            req.aux_price,
            req.tif,
            req.order_ref,
            req.account,
            req.parent_id,
            req.transmit,
            req.oca_group,
            req.outside_rth,
            req.what_if,
        )
        if req.what_if:
            self.core.what_if(self, req.order_id, spec)
            return
        self.core.engine.place(self.client_id, req.order_id, spec)

    def _cancel_order(self, fields: list[str]) -> None:
        assert self.client_id is not None
        self.core.engine.cancel(self.client_id, _req_id_of(fields, 2))

    def _req_global_cancel(self, fields: list[str]) -> None:
        log.info("client %s: global cancel", self.client_id)
        self.core.engine.global_cancel()

    def _req_open_orders(self, fields: list[str]) -> None:
        sees_all = self.client_id == 0 or self.client_id == self.core.config.master_client_id
        self._send_open_orders(None if sees_all else self.client_id)

    def _req_all_open_orders(self, fields: list[str]) -> None:
        self._send_open_orders(None)

    def _send_open_orders(self, client_id: int | None) -> None:
        account = self.core.config.account
        for order in self.core.engine.open_orders(client_id):
            if order.status == "PendingSubmit":
                continue
            self.send(msg.open_order(self.sv, order, account))
            self.send(msg.order_status(self.sv, order))
        self.send([53, 1])

    def _req_completed_orders(self, fields: list[str]) -> None:
        for order in self.core.engine.completed_orders():
            self.send(msg.completed_order(self.sv, order, self.core.config.account))
        self.send([102])

    def _req_executions(self, fields: list[str]) -> None:
        f = parse_exec_filter(fields)
        account = self.core.config.account
        for e in self.core.engine.executions:
            if f.client_id and e.order.client_id != f.client_id:
                continue
            if f.symbol and e.contract.symbol != f.symbol:
                continue
            if f.sec_type and e.contract.sec_type != f.sec_type:
                continue
            if f.side and e.side != {"BUY": "BOT", "SELL": "SLD"}.get(f.side, f.side):
                continue
            if f.account and f.account != account:
                continue
            self.send(msg.exec_details(self.sv, f.req_id, e, account))
            self.send(msg.commission_report(self.sv, e))
        self.send([55, 1, f.req_id])

    def _req_ids(self, fields: list[str]) -> None:
        self.send([9, 1, self.core.next_valid_id()])

    def _req_current_time(self, fields: list[str]) -> None:
        self.send([49, 1, int(self.core.now().timestamp())])

    def _req_managed_accounts(self, fields: list[str]) -> None:
        self.send([15, 1, self.core.config.account])

    # --- account and portfolio -----------------------------------------------------------------
    def _req_account_updates(self, fields: list[str]) -> None:
        r = FieldReader(fields)
        r.skip(2)
        subscribe = r.flag()
        self.subs.account_updates = subscribe
        if subscribe:
            self.push_account(full=True)

    def push_account(self, full: bool = False, contracts: list[Contract] | None = None) -> None:
        """Send account values and portfolio lines (all of them, or the given contracts)."""
        core = self.core
        account = core.config.account
        for tag, value, currency in value_rows(core.account_values()):
            self.send(msg.account_value(self.sv, account, tag, value, currency))
        if full:
            self.send(msg.account_value(self.sv, account, "AccountCode", account, ""))
            self.send(msg.account_value(self.sv, account, "AccountType", "INDIVIDUAL", ""))
        positions = core.account.positions
        if contracts is None:
            for p in positions.values():
                self.send(msg.portfolio_value(self.sv, account, p, core.engine.mark(p.contract)))
        else:
            for c in contracts:
                p = positions.get(c.con_id) or core.flat_position(c)
                self.send(msg.portfolio_value(self.sv, account, p, core.engine.mark(c)))
        self.send([8, 1, core.now().strftime("%H:%M")])
        if full:
            self.send([54, 1, account])

    def _req_account_updates_multi(self, fields: list[str]) -> None:
        r = FieldReader(fields)
        r.skip(2)
        req_id = r.integer()
        self.subs.account_multi.add(req_id)
        self.push_account_multi(req_id)
        self.send([74, 1, req_id])

    def push_account_multi(self, req_id: int) -> None:
        account = self.core.config.account
        for tag, value, currency in value_rows(self.core.account_values()):
            self.send(msg.account_update_multi(self.sv, req_id, account, tag, value, currency))

    def _cancel_account_updates_multi(self, fields: list[str]) -> None:
        self.subs.account_multi.discard(_req_id_of(fields, 2))

    def _req_positions(self, fields: list[str]) -> None:
        self.subs.positions = True
        for p in self.core.account.positions.values():
            self.send(msg.position(self.sv, self.core.config.account, p))
        self.send([62, 1])

    def _cancel_positions(self, fields: list[str]) -> None:
        self.subs.positions = False

    def _req_positions_multi(self, fields: list[str]) -> None:
        """Answer reqPositionsMulti once (positionMulti lines, then the end marker)."""
        r = FieldReader(fields)
        r.skip(2)
        req_id = r.integer()
        account = self.core.config.account
        for p in self.core.account.positions.values():
            self.send(msg.position_multi(self.sv, req_id, account, p))
        self.send([72, 1, req_id])

    def _req_account_summary(self, fields: list[str]) -> None:
        r = FieldReader(fields)
        r.skip(2)
        req_id = r.integer()
        self.subs.account_summary.add(req_id)
        self.push_account_summary(req_id)

    def push_account_summary(self, req_id: int) -> None:
        account = self.core.config.account
        values = self.core.account_values()
        self.send(msg.account_summary(self.sv, req_id, account, "AccountType", "INDIVIDUAL", ""))
        for tag in ACCOUNT_TAGS:
            self.send(msg.account_summary(self.sv, req_id, account, tag, values[tag], "USD"))
        self.send([64, 1, req_id])

    def _cancel_account_summary(self, fields: list[str]) -> None:
        self.subs.account_summary.discard(_req_id_of(fields, 2))

    def _req_pnl(self, fields: list[str]) -> None:
        req_id = _req_id_of(fields, 1)
        self.subs.pnl.add(req_id)
        self.push_pnl(req_id)

    def push_pnl(self, req_id: int) -> None:
        v = self.core.account_values()
        self.send(msg.pnl(self.sv, req_id, v["DailyPnL"], v["UnrealizedPnL"], v["RealizedPnL"]))

    def _cancel_pnl(self, fields: list[str]) -> None:
        self.subs.pnl.discard(_req_id_of(fields, 1))

    def _req_pnl_single(self, fields: list[str]) -> None:
        r = FieldReader(fields)
        r.skip(1)
        req_id = r.integer()
        r.skip(2)
        self.subs.pnl_single[req_id] = r.integer()
        self.push_pnl_single(req_id)

    def push_pnl_single(self, req_id: int) -> None:
        con_id = self.subs.pnl_single[req_id]
        p = self.core.account.positions.get(con_id)
        if p is None:
            self.send(msg.pnl_single(self.sv, req_id, 0.0, 0.0, 0.0, 0.0, 0.0))
            return
        value = p.quantity * self.core.engine.mark(p.contract) * p.contract.multiplier
        unrealized = value - p.quantity * p.avg_cost
        self.send(msg.pnl_single(self.sv, req_id, p.quantity, unrealized, unrealized, 0.0, value))

    def _cancel_pnl_single(self, fields: list[str]) -> None:
        self.subs.pnl_single.pop(_req_id_of(fields, 1), None)

    def push_account_all(self) -> None:
        """Refresh every account-level subscription of this client."""
        if self.subs.account_updates:
            self.push_account()
        for req_id in list(self.subs.account_multi):
            self.push_account_multi(req_id)
        for req_id in list(self.subs.account_summary):
            self.push_account_summary(req_id)
        for req_id in list(self.subs.pnl):
            self.push_pnl(req_id)
        for req_id in list(self.subs.pnl_single):
            self.push_pnl_single(req_id)


def _req_id_of(fields: list[str], index: int) -> int:
    try:
        return int(fields[index])
    except (IndexError, ValueError):
        return -1
