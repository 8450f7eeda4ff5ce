"""The swarm's data: instance files, the market context, and the `submit_signals` boundary.

Everything that crosses the LLM boundary is validated here with pydantic models that forbid
extra fields; what comes out is an immutable `Signal` or an `Abstain` with its reason.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from data_lake import Contract

__all__ = [
    "SIGNAL_TOOL",
    "Abstain",
    "InstanceConfig",
    "MarketContext",
    "OptionView",
    "Provenance",
    "Signal",
    "SignalPayload",
    "SubmitSignals",
    "SymbolView",
]


class InstanceConfig(BaseModel):
    """One strategy instance file (swarm_intelligence/active_instances/*.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    description: str = ""
    template: str = Field(pattern=r"^[A-Za-z0-9_\-]+\.md$")
    model: str = Field(min_length=1)
    enabled: bool = True
    timeout_s: float = Field(30.0, gt=0, le=600)
    max_tokens: int = Field(1024, ge=64, le=16384)
    max_input_tokens: int = Field(30_000, ge=100)
    parameters: dict[str, Any]

    @field_validator("parameters")
    @classmethod
    def _symbols(cls, v: dict[str, Any]) -> dict[str, Any]:
        symbols = v.get("symbols")
        if (
            not isinstance(symbols, list)
            or not symbols
            or not all(isinstance(s, str) and s.isalnum() and s == s.upper() for s in symbols)
        ):
            raise ValueError("parameters.symbols must be a non-empty list of upper-case tickers")
        for key in ("stop_loss_pct", "take_profit_pct"):  # optional protective overrides
            if key not in v:
                continue
            pct = v[key]
            if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct < 1:
                raise ValueError(f"parameters.{key} must be a number between 0 and 1, got {pct!r}")
        if "take_profit_pct" in v and "stop_loss_pct" not in v:
            raise ValueError("parameters.take_profit_pct needs parameters.stop_loss_pct")
        return v

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.parameters["symbols"])

    def protection_override(self, key: str) -> float | None:
        """This instance's `stop_loss_pct` / `take_profit_pct` override (None: the global)."""
        value = self.parameters.get(key)
        return float(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class SymbolView:
    symbol: str
    last: float
    bid: float
    ask: float
    iv: float  # annualised implied vol of the underlying
    iv_rank: float  # 0..1 over a year of daily IV
    sma20: float
    position: float = 0.0


@dataclass(frozen=True, slots=True)
class OptionView:
    symbol: str
    expiry: str
    strike: float
    right: str
    bid: float
    ask: float
    delta: float
    dte: int
    position: float = 0.0

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask)


@dataclass(frozen=True, slots=True)
class MarketContext:
    """What the swarm sees of the market in one cycle (built by the commander's Sense step)."""

    as_of: str
    symbols: tuple[SymbolView, ...]
    options: tuple[OptionView, ...] = ()

    def symbol(self, name: str) -> SymbolView | None:
        return next((s for s in self.symbols if s.symbol == name), None)

    def option(self, contract: Contract) -> OptionView | None:
        """The option offered this cycle that is `contract` (None: not offered)."""
        return next(
            (
                o
                for o in self.options
                if o.symbol == contract.symbol
                and o.expiry == contract.expiry
                and abs(o.strike - contract.strike) < 1e-6
                and o.right == contract.right
            ),
            None,
        )


class SignalPayload(BaseModel):
    """One element of `submit_signals.signals`, exactly as DESIGN section 7 fixes it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    symbol: str = Field(min_length=1, max_length=12)
    action: Literal["BUY", "SELL"]
    sec_type: Literal["STK", "OPT"]
    expiry: str | None = Field(None, pattern=r"^\d{8}$")
    strike: float | None = Field(None, gt=0)
    right: Literal["C", "P"] | None = None
    order_type: Literal["LMT", "MKT"]
    limit_price: float | None = Field(None, gt=0)
    quantity: int | None = Field(None, ge=1)
    confidence: float = Field(ge=0, le=1)
    win_probability: float | None = Field(None, ge=0, le=1)
    payoff_ratio: float | None = Field(None, gt=0)
    rationale: str = Field(max_length=4000)

    @field_validator("strike", "limit_price", "confidence", "win_probability", "payoff_ratio")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _complete(self) -> SignalPayload:
        if self.sec_type == "OPT" and (
            self.expiry is None or self.strike is None or self.right is None
        ):
            raise ValueError("an option signal needs expiry, strike and right")
        if self.sec_type == "STK" and (self.expiry or self.strike or self.right):
            raise ValueError("a stock signal must not carry expiry, strike or right")
        if self.order_type == "LMT" and self.limit_price is None:
            raise ValueError("a limit order needs limit_price")
        return self

    @property
    def contract(self) -> Contract:
        """The contract this signal names (validated complete: an option has all three)."""
        return Contract(
            symbol=self.symbol,
            sec_type=self.sec_type,
            expiry=self.expiry or "",
            strike=self.strike or 0.0,
            right=self.right or "",
        )


class SubmitSignals(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    signals: list[SignalPayload] = Field(max_length=20)


SIGNAL_TOOL: dict[str, Any] = {
    "name": "submit_signals",
    "description": "Submit your trade signals for this cycle. An empty list means no trade.",
    "strict": True,
    "input_schema": {
        "type": "object",
        "additionalProperties": False,
        "required": ["signals"],
        "properties": {
            "signals": {
                "type": "array",
                "maxItems": 20,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [
                        "symbol",
                        "action",
                        "sec_type",
                        "order_type",
                        "confidence",
                        "rationale",
                    ],
                    "properties": {
                        "symbol": {"type": "string"},
                        "action": {"type": "string", "enum": ["BUY", "SELL"]},
                        "sec_type": {"type": "string", "enum": ["STK", "OPT"]},
                        "expiry": {"type": "string", "pattern": "^[0-9]{8}$"},
                        "strike": {"type": "number", "exclusiveMinimum": 0},
                        "right": {"type": "string", "enum": ["C", "P"]},
                        "order_type": {"type": "string", "enum": ["LMT", "MKT"]},
                        "limit_price": {"type": "number", "exclusiveMinimum": 0},
                        "quantity": {"type": "integer", "minimum": 1},
                        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                        "win_probability": {"type": "number", "minimum": 0, "maximum": 1},
                        "payoff_ratio": {"type": "number", "exclusiveMinimum": 0},
                        "rationale": {"type": "string", "maxLength": 4000},
                    },
                },
            }
        },
    },
}


@dataclass(frozen=True, slots=True)
class Provenance:
    instance_id: str
    provider: str
    model: str
    template_hash: str
    params_hash: str
    prompt_hash: str
    raw_response: str


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """A validated trade idea from one instance (never an order by itself)."""

    contract: Contract
    action: str
    order_type: str
    confidence: float
    rationale: str
    provenance: Provenance
    limit_price: float | None = None
    quantity: int | None = None
    win_probability: float | None = None
    payoff_ratio: float | None = None
    id: str = field(default_factory=_new_id)
    created_at: str = field(default_factory=_now)

    @property
    def key(self) -> str:
        return self.contract.key


@dataclass(frozen=True, slots=True)
class Abstain:
    """An instance that produced no usable answer this cycle, and why (never a 'hold')."""

    instance_id: str
    reason: str
    provenance: Provenance | None = None
    status: str = "abstain"  # abstain | error | timeout | budget | cancelled
    id: str = field(default_factory=_new_id)
    created_at: str = field(default_factory=_now)
