"""The admin channel: one JSON object per line in, one JSON line out (DESIGN section 7)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .instruments import Contract
from .realities import COMPETING_SESSION, ENTITLEMENTS, FARMS

if TYPE_CHECKING:
    from .server import GatewayCore

__all__ = ["AdminError", "AdminServer"]

log = logging.getLogger("paper_gateway.admin")
MAX_LINE = 64 * 1024

Reply = dict[str, Any]


class AdminError(Exception):
    """A command that cannot be carried out; the message goes back as {"ok": false}."""


def _number(
    cmd: dict[str, Any], key: str, *, positive: bool = False, allow_zero: bool = True
) -> float:
    if key not in cmd:
        raise AdminError(f"missing {key!r}")
    value = cmd[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AdminError(f"{key!r} must be a finite number, got {value!r}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise AdminError(f"{key!r} must be {'> 0' if not allow_zero else '>= 0'}, got {value!r}")
    return float(value)


def _int(cmd: dict[str, Any], key: str) -> int:
    value = cmd.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(f"{key!r} must be an integer, got {value!r}")
    return value


class AdminServer:
    def __init__(self, core: GatewayCore) -> None:
        self.core = core
        self.commands: dict[str, Callable[[dict[str, Any]], Reply]] = {
            "state": self.state,
            "set_price": self.set_price,
            "set_position": self.set_position,
            "error": self.error,
            "restart": self.restart,
            "reject_next": self.reject_next,
            "freeze": self.freeze,
            "reset": self.reset,
            "step": self.step,
            "ledger": self.ledger,
            "advance_clock": self.advance_clock,
            "restart_now": self.restart_now,
            "login": self.login,
            "farm": self.farm,
            "entitlement": self.entitlement,
            "competing_session": self.competing_session,
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                reply = self.execute(line)
                await self.core.settle()  # a gateway coming back up listens before the reply
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def execute(self, line: bytes) -> Reply:
        """Run one command line and return its reply; never raises."""
        if len(line) > MAX_LINE:
            return {"ok": False, "error": "line too long"}
        try:
            cmd = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"invalid JSON: {exc}"}
        if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
            return {"ok": False, "error": 'expected an object with a "cmd" string'}
        handler = self.commands.get(cmd["cmd"])
        if handler is None:
            return {
                "ok": False,
                "error": f"unknown command {cmd['cmd']!r}",
                "commands": sorted(self.commands),
            }
        try:
            reply = handler(cmd)
        except AdminError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # an admin command must never take the gateway down
            log.exception("admin command %s failed", cmd["cmd"])
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        log.info("admin %s -> ok", cmd["cmd"])
        return {"ok": True, **reply}

    # --- commands ----------------------------------------------------------------------------
    def state(self, cmd: dict[str, Any]) -> Reply:
        core = self.core
        positions = [
            {
                "symbol": p.contract.symbol,
                "sec_type": p.contract.sec_type,
                "quantity": p.quantity,
                "avg_cost": p.avg_cost,
                "con_id": p.contract.con_id,
                "expiry": p.contract.expiry,
                "strike": p.contract.strike,
                "right": p.contract.right,
                "multiplier": p.contract.multiplier,
            }
            for p in core.account.positions.values()
        ]
        open_orders = [
            {
                "client_id": o.client_id,
                "order_id": o.order_id,
                "perm_id": o.perm_id,
                "symbol": o.spec.contract.symbol,
                "sec_type": o.spec.contract.sec_type,
                "expiry": o.spec.contract.expiry,
                "strike": o.spec.contract.strike,
                "right": o.spec.contract.right,
                "action": o.spec.action,
                "quantity": o.spec.quantity,
                "order_type": o.spec.order_type,
                "lmt_price": o.spec.lmt_price,
                "aux_price": o.spec.aux_price,
                "tif": o.spec.tif,
                "status": o.status,
                "filled": o.filled,
                "order_ref": o.spec.order_ref,
                "parent_id": o.spec.parent_id,
                "oca_group": o.spec.oca_group,
            }
            for o in core.engine.open_orders()
        ]
        values = core.account_values()
        return {
            "positions": positions,
            "open_orders": open_orders,
            "executions": len(core.engine.executions),
            "clients": sorted(core.clients),
            "account": {"id": core.config.account, **{k: round(v, 2) for k, v in values.items()}},
            "prices": {s: round(core.market.price(s), 4) for s in core.market.symbols()},
            "frozen": core.frozen,
            "clock": core.now().isoformat(),
            "down": None
            if core.down is None
            else {
                "since": core.down.since.isoformat(),
                "until": core.down.until.isoformat(),
                "login_required": core.down.login_required,
                "reason": core.down.reason,
            },
            "next_restart": None if core.next_restart is None else core.next_restart.isoformat(),
            "outage": core.outage,
            "farms": {name: "ok" if ok else "broken" for name, ok in core.farms.items()},
            "entitlements": dict(sorted(core.entitlements.items())),
            "competing_sessions": sorted(core.competing),
            "market_data_lines": core.lines_in_use(),
            "max_market_data_lines": core.config.max_market_data_lines,
            "historical_pacing": core.config.historical_pacing,
            "market_data": {
                str(cid): sorted(sess.subs.market) for cid, sess in sorted(core.clients.items())
            },
        }

    def set_price(self, cmd: dict[str, Any]) -> Reply:
        symbol = str(cmd.get("symbol", "")).upper()
        price = _number(cmd, "price", positive=True, allow_zero=False)
        if symbol not in self.core.catalogue.stocks:
            raise AdminError(f"unknown symbol {symbol!r}")
        self.core.market.set_price(symbol, price)
        self.core.market_moved()
        return {"symbol": symbol, "price": price}

    def _contract(self, cmd: dict[str, Any]) -> Contract:
        symbol = str(cmd.get("symbol", "")).upper()
        sec_type = str(cmd.get("sec_type", "STK")).upper()
        if sec_type == "STK":
            found = self.core.catalogue.stock(symbol)
        elif sec_type == "OPT":
            found = self.core.catalogue.option(
                symbol,
                str(cmd.get("expiry", "")),
                _number(cmd, "strike"),
                str(cmd.get("right", "")),
            )
        else:
            raise AdminError(f"unsupported sec_type {sec_type!r}")
        if found is None:
            raise AdminError(f"unknown contract {symbol} {sec_type}")
        return found

    def set_position(self, cmd: dict[str, Any]) -> Reply:
        contract = self._contract(cmd)
        quantity = _number(cmd, "quantity")
        avg_cost = (
            _number(cmd, "avg_cost")
            if "avg_cost" in cmd
            else (self.core.engine.mark(contract) * contract.multiplier)
        )
        self.core.account.set_position(contract, quantity, avg_cost)
        self.core.positions_changed([contract])
        return {"symbol": contract.symbol, "quantity": quantity, "avg_cost": avg_cost}

    def error(self, cmd: dict[str, Any]) -> Reply:
        code = _int(cmd, "code")
        message = str(cmd.get("msg", ""))
        sent = self.core.broadcast_error(code, message)
        return {"sent_to": sent}

    def restart(self, cmd: dict[str, Any]) -> Reply:
        down = _number(cmd, "down_s", positive=True) if "down_s" in cmd else 1.0
        self.core.restart(down)
        return {"down_s": down}

    def reject_next(self, cmd: dict[str, Any]) -> Reply:
        code = _int(cmd, "code") if "code" in cmd else 201
        order_type = cmd.get("order_type")  # optional: only the next order of this type
        if order_type is not None and (not isinstance(order_type, str) or not order_type):
            raise AdminError("order_type must be an order type such as 'STP'")
        self.core.engine.reject_next = code
        self.core.engine.reject_next_type = order_type.upper() if order_type else None
        return {"code": code, "order_type": order_type}

    def freeze(self, cmd: dict[str, Any]) -> Reply:
        seconds = _number(cmd, "seconds", positive=True)
        self.core.freeze(seconds)
        return {"seconds": seconds}

    def reset(self, cmd: dict[str, Any]) -> Reply:
        self.core.reset()
        return {}

    def step(self, cmd: dict[str, Any]) -> Reply:
        """Advance the market model by `seconds` of simulated trading (extra, for drills)."""
        seconds = _number(cmd, "seconds", positive=True, allow_zero=False)
        self.core.market.step(seconds)
        self.core.market_moved()
        return {"seconds": seconds}

    def ledger(self, cmd: dict[str, Any]) -> Reply:
        """Every order ever placed and every execution, for drills that check the books."""
        engine = self.core.engine
        return {
            "orders": [
                {
                    "client_id": o.client_id,
                    "order_id": o.order_id,
                    "perm_id": o.perm_id,
                    "order_ref": o.spec.order_ref,
                    "symbol": o.spec.contract.symbol,
                    "sec_type": o.spec.contract.sec_type,
                    "action": o.spec.action,
                    "quantity": o.spec.quantity,
                    "status": o.status,
                    "filled": o.filled,
                }
                for o in engine.orders.values()
            ],
            "executions": [
                {
                    "exec_id": e.exec_id,
                    "order_ref": e.order.spec.order_ref,
                    "client_id": e.order.client_id,
                    "perm_id": e.order.perm_id,
                    "symbol": e.contract.symbol,
                    "sec_type": e.contract.sec_type,
                    "expiry": e.contract.expiry,
                    "strike": e.contract.strike,
                    "right": e.contract.right,
                    "side": e.side,
                    "shares": e.shares,
                    "price": e.price,
                }
                for e in engine.executions
            ],
        }

    # --- production realities -----------------------------------------------------------------
    def advance_clock(self, cmd: dict[str, Any]) -> Reply:
        """Move the gateway's clock forward (restart schedule, down time, historical pacing)."""
        seconds = _number(cmd, "seconds", positive=True)
        self.core.advance_clock(seconds)
        return {"clock": self.core.now().isoformat(), "down": self.core.down is not None}

    def restart_now(self, cmd: dict[str, Any]) -> Reply:
        """The daily restart, now: down for `down_s` of gateway time, or until `login`."""
        down = (
            _number(cmd, "down_s", positive=True)
            if "down_s" in cmd
            else self.core.config.restart_down_s
        )
        reauth = cmd.get("reauth", False)
        if not isinstance(reauth, bool):
            raise AdminError(f"'reauth' must be true or false, got {reauth!r}")
        self.core.go_down(down, reauth, "restart_now")
        self.core.check_schedule()  # down_s 0 comes back at once
        return {"down_s": down, "login_required": reauth}

    def login(self, cmd: dict[str, Any]) -> Reply:
        """The weekly re-authentication: a gateway waiting for it comes back up."""
        if not self.core.login():
            raise AdminError("the gateway is not down")
        down = self.core.down
        return {"down": down is not None, "until": None if down is None else down.until.isoformat()}

    def farm(self, cmd: dict[str, Any]) -> Reply:
        """Farm status flap: 2103/2105/2157 broken, 2104/2106/2158 OK; sockets stay up."""
        name = str(cmd.get("farm", ""))
        if name not in FARMS:
            raise AdminError(f"'farm' must be one of {sorted(FARMS)}, got {name!r}")
        ok = cmd.get("ok")
        if not isinstance(ok, bool):
            raise AdminError(f"'ok' must be true or false, got {ok!r}")
        farm = FARMS[name]
        sent = self.core.set_farm(name, ok)
        return {"code": farm.ok_code if ok else farm.broken_code, "sent_to": sent}

    def entitlement(self, cmd: dict[str, Any]) -> Reply:
        """Market-data entitlement of a symbol (and its options): live, delayed or none."""
        symbol = str(cmd.get("symbol", "")).upper()
        if symbol not in self.core.catalogue.stocks:
            raise AdminError(f"unknown symbol {symbol!r}")
        level = cmd.get("level")
        if level not in ENTITLEMENTS:
            raise AdminError(f"'level' must be one of {list(ENTITLEMENTS)}, got {level!r}")
        if level == "live":
            self.core.entitlements.pop(symbol, None)
        else:
            self.core.entitlements[symbol] = str(level)
        return {"symbol": symbol, "level": level}

    def competing_session(self, cmd: dict[str, Any]) -> Reply:
        """A live session elsewhere takes a client's market data: 10197 on each subscription
        (they end) and on every new request while `active`."""
        client_id = _int(cmd, "client_id")
        active = cmd.get("active", True)
        if not isinstance(active, bool):
            raise AdminError(f"'active' must be true or false, got {active!r}")
        ended = 0
        if active:
            self.core.competing.add(client_id)
            session = self.core.clients.get(client_id)
            if session is not None:
                ended = len(session.subs.market)
                session.end_market_data(10197, COMPETING_SESSION)
        else:
            self.core.competing.discard(client_id)
        return {"client_id": client_id, "active": active, "ended": ended}
