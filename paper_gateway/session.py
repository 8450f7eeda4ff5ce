"""One API client connection: handshake, startApi, request dispatch, subscriptions, pacing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import messages as msg
from . import simple_messages as sm
from .account_requests import AccountRequests
from .engine import OrderSpec
from .market_requests import MarketRequests
from .requests import parse_exec_filter, parse_place_order
from .session_base import Subscriptions, req_id_of
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
# requests a farm serves: while it is broken they wait, answered when it is OK again
FARM_OF_REQUEST = {9: "secdef", 78: "secdef", 20: "historical", 87: "historical"}


class Session(MarketRequests, AccountRequests):
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
        self.md_type = 1
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
            59: self._req_market_data_type,
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
            req_id = req_id_of(fields, 2 if msg_id != 3 else 1)
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
        farm = FARM_OF_REQUEST.get(msg_id)
        if farm is not None and not self.core.farms[farm]:
            log.info("client %s: request %s waits for the %s farm", self.client_id, msg_id, farm)
            self.core.farm_waiting[farm].append((self, fields))
            return
        self.dispatch(msg_id, fields)

    def dispatch(self, msg_id: int, fields: list[str]) -> None:
        """Run one request's handler; a bad or unserved request gets its error."""
        if self.closed:
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
                    req_id_of(fields, 1),
                    321,
                    f"Error validating request.-'{fields[0]}' : {exc}",
                )
            )
        except Exception as exc:  # a gateway bug must not drop the client or desync the stream
            log.exception("client %s: internal error handling %s", self.client_id, fields[:3])
            self.send(
                msg.error(
                    self.sv,
                    req_id_of(fields, 1),
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
        self.send(sm.managed_accounts(self.sv, self.core.config.account))
        self.send(sm.next_valid_id(self.sv, self.core.next_valid_id()))
        for code, text in self.core.farm_messages():
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
                answer[what.answer_index] = req_id_of(fields, what.req_id_index)
            self.send(answer)
        else:
            idx = what.req_id_index
            req_id = -1 if idx is None else req_id_of(fields, idx)
            self.send(msg.error(self.sv, req_id, what.code, what.text))

    def _ignore(self, fields: list[str]) -> None:
        return None

    # --- orders ----------------------------------------------------------------------------
    def _place_order(self, fields: list[str]) -> None:
        if self.client_id is None:
            raise RuntimeError("order message before startApi: the session has no client id")
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
        contract = self._resolve_one(req.order_id, req.contract)
        if contract is None:
            return
        spec = OrderSpec(
            contract,
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
            req.oca_type,
        )
        if req.what_if:
            self.core.what_if(self, req.order_id, spec)
            return
        client_id, order_id, engine = self.client_id, req.order_id, self.core.engine
        if self.core.defer(lambda: engine.place(client_id, order_id, spec)):
            log.info("client %s order %s held until connectivity is restored", client_id, order_id)
            return
        engine.place(client_id, order_id, spec)

    def _cancel_order(self, fields: list[str]) -> None:
        if self.client_id is None:
            raise RuntimeError("order message before startApi: the session has no client id")
        client_id, order_id, engine = self.client_id, req_id_of(fields, 2), self.core.engine
        if self.core.defer(lambda: engine.cancel(client_id, order_id)):
            return
        engine.cancel(client_id, order_id)

    def _req_global_cancel(self, fields: list[str]) -> None:
        log.info("client %s: global cancel", self.client_id)
        engine = self.core.engine
        if self.core.defer(lambda: engine.global_cancel()):
            return
        engine.global_cancel()

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
        self.send(sm.open_order_end(self.sv))

    def _req_completed_orders(self, fields: list[str]) -> None:
        for order in self.core.engine.completed_orders():
            self.send(msg.completed_order(self.sv, order, self.core.config.account))
        self.send(sm.completed_orders_end(self.sv))

    def _req_executions(self, fields: list[str]) -> None:
        f = parse_exec_filter(fields)
        account = self.core.config.account
        for e in self.core.engine.executions:
            if e.exec_id in self.core.withheld_execs:
                continue  # filled during an outage: the gateway does not know it yet
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
        self.send(sm.exec_details_end(self.sv, f.req_id))

    def _req_ids(self, fields: list[str]) -> None:
        self.send(sm.next_valid_id(self.sv, self.core.next_valid_id()))

    def _req_current_time(self, fields: list[str]) -> None:
        self.send(sm.current_time(self.sv, int(self.core.now().timestamp())))

    def _req_managed_accounts(self, fields: list[str]) -> None:
        self.send(sm.managed_accounts(self.sv, self.core.config.account))
