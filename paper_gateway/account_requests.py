"""Account, position and PnL requests of a session (a mixin of Session)."""

from __future__ import annotations

from . import messages as msg
from . import simple_messages as sm
from .account import ACCOUNT_TAGS, value_rows
from .instruments import Contract
from .session_base import SessionBase, req_id_of
from .wire import FieldReader

__all__ = ["AccountRequests"]


class AccountRequests(SessionBase):
    """Answer and push account values, portfolio, positions, summaries and PnL."""

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
        self.send(sm.account_update_time(self.sv, core.now().strftime("%H:%M")))
        if full:
            self.send(sm.account_download_end(self.sv, account))

    def _req_account_updates_multi(self, fields: list[str]) -> None:
        r = FieldReader(fields)
        r.skip(2)
        req_id = r.integer()
        self.subs.account_multi.add(req_id)
        self.push_account_multi(req_id)
        self.send(sm.account_update_multi_end(self.sv, req_id))

    def push_account_multi(self, req_id: int) -> None:
        account = self.core.config.account
        for tag, value, currency in value_rows(self.core.account_values()):
            self.send(msg.account_update_multi(self.sv, req_id, account, tag, value, currency))

    def _cancel_account_updates_multi(self, fields: list[str]) -> None:
        self.subs.account_multi.discard(req_id_of(fields, 2))

    def _req_positions(self, fields: list[str]) -> None:
        self.subs.positions = True
        for p in self.core.account.positions.values():
            self.send(msg.position(self.sv, self.core.config.account, p))
        self.send(sm.position_end(self.sv))

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
        self.send(sm.position_multi_end(self.sv, req_id))

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
        self.send(sm.account_summary_end(self.sv, req_id))

    def _cancel_account_summary(self, fields: list[str]) -> None:
        self.subs.account_summary.discard(req_id_of(fields, 2))

    def _req_pnl(self, fields: list[str]) -> None:
        req_id = req_id_of(fields, 1)
        self.subs.pnl.add(req_id)
        self.push_pnl(req_id)

    def push_pnl(self, req_id: int) -> None:
        v = self.core.account_values()
        self.send(msg.pnl(self.sv, req_id, v["DailyPnL"], v["UnrealizedPnL"], v["RealizedPnL"]))

    def _cancel_pnl(self, fields: list[str]) -> None:
        self.subs.pnl.discard(req_id_of(fields, 1))

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
        self.subs.pnl_single.pop(req_id_of(fields, 1), None)

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
