"""The execution gate's limits: one frozen, typed section of the configuration.

It lives beside the gate (not in `runtime`) so that `skills` depends on nothing above it;
`runtime.config` embeds it as the `[risk]` section.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DEFAULT_SYMBOLS", "RiskConfig"]

DEFAULT_SYMBOLS = ("NVDA", "AMD", "TSLA", "AAPL", "MSFT", "SPY", "JPM", "BAC", "GS")


class RiskConfig(BaseModel):
    """The execution gate's limits. Read-only to everything an LLM touches."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    allowed_symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    allowed_sec_types: tuple[Literal["STK", "OPT"], ...] = ("STK", "OPT")
    max_order_quantity: float = Field(100, gt=0)
    max_order_notional: float = Field(25_000.0, gt=0)
    max_position_notional: float = Field(50_000.0, gt=0)
    max_gross_exposure: float = Field(200_000.0, gt=0)
    max_portfolio_delta: float = Field(100_000.0, gt=0, description="dollar delta, absolute")
    max_open_positions: int = Field(10, ge=1)
    max_daily_loss: float = Field(5_000.0, gt=0)
    price_collar_pct: float = Field(0.05, gt=0, le=0.5)
    # a protective child's stop or limit at most this far from its parent's fill reference
    protective_collar_pct: float = Field(0.5, gt=0, le=5)
    quote_max_age_s: float = Field(10.0, gt=0, le=3600)
    max_orders_per_second: int = Field(2, ge=1, le=50)
    max_orders_per_minute: int = Field(20, ge=1)
    max_orders_per_day: int = Field(200, ge=1)
    max_executions_per_window: int = Field(50, ge=1)
    execution_window_s: float = Field(60.0, gt=0)
    duplicate_window_s: float = Field(60.0, ge=0)
    max_consecutive_rejects: int = Field(3, ge=1)
    require_watchdog: bool = True

    @field_validator("max_order_quantity")
    @classmethod
    def _whole_units(cls, v: float) -> float:
        # a float key because TOML may write 100.0; infinity is no number of shares either
        if not (math.isfinite(v) and float(v).is_integer()):
            raise ValueError("must be a whole number of shares or contracts")
        return v

    @model_validator(mode="after")
    def _symbols_upper(self) -> RiskConfig:
        if not self.allowed_symbols:
            raise ValueError("allowed_symbols must list at least one symbol")
        bad = [s for s in self.allowed_symbols if not s.isalnum() or s != s.upper()]
        if bad:
            raise ValueError(f"allowed_symbols must be upper-case tickers, got {bad}")
        return self
