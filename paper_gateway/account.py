"""The paper account: cash, positions with average cost, realised and unrealised PnL, margin."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .instruments import Contract

__all__ = ["ACCOUNT_TAGS", "Account", "Position", "commission_for", "value_rows"]

INITIAL_MARGIN = 0.5
MAINT_MARGIN = 0.25
SHORT_OPTION_MARGIN = 0.2  # share of the underlying's notional held against a short option
BASE_CURRENCY = "USD"

# account-level tags, reported in the base currency (reqAccountSummary's tags too)
ACCOUNT_TAGS = (
    "NetLiquidation",
    "TotalCashValue",
    "CashBalance",
    "SettledCash",
    "GrossPositionValue",
    "EquityWithLoanValue",
    "InitMarginReq",
    "MaintMarginReq",
    "AvailableFunds",
    "ExcessLiquidity",
    "BuyingPower",
    "UnrealizedPnL",
    "RealizedPnL",
)
# ledger tags, reported once per currency held and once as BASE (the base-currency total)
LEDGER_TAGS = (
    "CashBalance",
    "TotalCashBalance",
    "NetLiquidationByCurrency",
    "StockMarketValue",
    "OptionMarketValue",
    "UnrealizedPnL",
    "RealizedPnL",
    "ExchangeRate",
)


@dataclass(slots=True)
class Position:
    contract: Contract
    quantity: float
    avg_cost: float  # per unit, multiplier included (IB convention)


def commission_for(contract: Contract, quantity: float, price: float) -> float:
    """Return IB-like fixed-rate commission: $0.005/share (min $1, max 1%), $0.65/option."""
    if contract.sec_type == "OPT":
        return round(max(1.0, 0.65 * quantity), 2)
    value = quantity * price
    return round(min(max(1.0, 0.005 * quantity), max(0.01 * value, 0.01)), 2)


class Account:
    """Ledger for one account. `apply_fill` is the only way cash and positions change."""

    def __init__(self, account_id: str, cash: float) -> None:
        self.account_id = account_id
        self.cash = cash
        self.realized_pnl = 0.0
        self.positions: dict[int, Position] = {}
        self.start_net_liq = cash

    def apply_fill(
        self, contract: Contract, side: str, quantity: float, price: float, commission: float
    ) -> float | None:
        """Book one execution; return its realised PnL net of commission (None if it only opens)."""
        signed = quantity if side == "BOT" else -quantity
        mult = contract.multiplier
        pos = self.positions.get(contract.con_id)
        old_qty = pos.quantity if pos else 0.0
        old_avg = pos.avg_cost if pos else 0.0
        realized = 0.0
        closing_fill = old_qty != 0 and (old_qty > 0) != (signed > 0)
        if not closing_fill:
            new_qty = old_qty + signed
            new_avg = (old_qty * old_avg + signed * price * mult) / new_qty
        else:
            closing = min(abs(signed), abs(old_qty))
            direction = 1.0 if old_qty > 0 else -1.0
            realized = closing * (price * mult - old_avg) * direction
            new_qty = old_qty + signed
            if abs(new_qty) < 1e-9:
                new_qty, new_avg = 0.0, 0.0
            elif (new_qty > 0) == (old_qty > 0):
                new_avg = old_avg
            else:
                new_avg = price * mult
        self.cash -= signed * price * mult + commission
        if new_qty == 0.0:
            self.positions.pop(contract.con_id, None)
        else:
            self.positions[contract.con_id] = Position(contract, new_qty, new_avg)
        self.realized_pnl += realized - commission
        return realized - commission if closing_fill else None

    def set_position(self, contract: Contract, quantity: float, avg_cost: float) -> None:
        """Overwrite a position (admin `set_position`); cash is not touched."""
        if quantity == 0:
            self.positions.pop(contract.con_id, None)
        else:
            self.positions[contract.con_id] = Position(contract, quantity, avg_cost)

    def values(self, mark: Callable[[Contract], float]) -> dict[str, float]:
        """Return the account values (IB tag -> value) with positions marked by `mark`."""
        market_value = 0.0
        gross = 0.0
        unrealized = 0.0
        margin_base = 0.0
        for p in self.positions.values():
            value = p.quantity * mark(p.contract) * p.contract.multiplier
            market_value += value
            gross += abs(value)
            unrealized += value - p.quantity * p.avg_cost
            margin_base += abs(value)
        stock_value = sum(
            p.quantity * mark(p.contract) * p.contract.multiplier
            for p in self.positions.values()
            if p.contract.sec_type != "OPT"
        )
        net_liq = self.cash + market_value
        init_margin = INITIAL_MARGIN * margin_base
        maint_margin = MAINT_MARGIN * margin_base
        available = net_liq - init_margin
        return {
            "NetLiquidation": net_liq,
            "TotalCashValue": self.cash,
            "CashBalance": self.cash,
            "SettledCash": self.cash,
            "GrossPositionValue": gross,
            "EquityWithLoanValue": net_liq,
            "InitMarginReq": init_margin,
            "MaintMarginReq": maint_margin,
            "AvailableFunds": available,
            "ExcessLiquidity": net_liq - maint_margin,
            "BuyingPower": max(0.0, available / INITIAL_MARGIN),
            "UnrealizedPnL": unrealized,
            "RealizedPnL": self.realized_pnl,
            "DailyPnL": net_liq - self.start_net_liq,
            "TotalCashBalance": self.cash,
            "NetLiquidationByCurrency": net_liq,
            "StockMarketValue": stock_value,
            "OptionMarketValue": market_value - stock_value,
            "ExchangeRate": 1.0,
        }

    def margin_for(
        self, contract: Contract, side: str, quantity: float, price: float, underlying_price: float
    ) -> float:
        """Return the initial margin an order would add (0 when it only reduces a position)."""
        pos = self.positions.get(contract.con_id)
        held = pos.quantity if pos else 0.0
        signed = quantity if side == "BUY" else -quantity
        if held != 0 and (held > 0) != (signed > 0):
            opening = max(0.0, abs(signed) - abs(held))
        else:
            opening = abs(signed)
        if opening == 0:
            return 0.0
        if contract.sec_type == "OPT":
            if signed > 0:
                return opening * price * contract.multiplier
            return opening * SHORT_OPTION_MARGIN * underlying_price * contract.multiplier
        return opening * price * INITIAL_MARGIN


def value_rows(values: dict[str, float]) -> list[tuple[str, float, str]]:
    """Return (tag, value, currency) rows as reqAccountUpdates reports them: the account tags
    in the base currency, then the ledger tags for BASE and for each currency (USD only)."""
    rows = [(tag, values[tag], BASE_CURRENCY) for tag in ACCOUNT_TAGS if tag not in LEDGER_TAGS]
    for currency in ("BASE", BASE_CURRENCY):
        rows += [(tag, values[tag], currency) for tag in LEDGER_TAGS]
    return rows
