"""The contract value type: what is traded, in one frozen object.

Signals, decisions, order requests, holdings, positions, the broker adapter and the data lake
all carry a `Contract`, never its five fields loose. `from_row`/`to_row` are the one mapping to
and from the stored columns (symbol, sec_type, expiry, strike, opt_right); the mapping to and
from the broker's contract lives in runtime/broker.py, the only module that imports the IB
client library. The type lives in the lowest package so that every package may use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Contract", "flat_dict", "from_flat_dict", "with_contract_columns"]


CONTRACT_FIELDS = ("symbol", "sec_type", "expiry", "strike", "right")


@dataclass(frozen=True, slots=True, kw_only=True)
class Contract:
    """A stock (`sec_type` "STK": expiry, strike and right unused) or an option ("OPT")."""

    symbol: str
    sec_type: str = "STK"
    expiry: str = ""  # YYYYMMDD for an option
    strike: float = 0.0
    right: str = ""  # "C" or "P" for an option

    @classmethod
    def stock(cls, symbol: str) -> Contract:
        """Return the stock `symbol`."""
        return cls(symbol=symbol)

    @classmethod
    def option(cls, symbol: str, expiry: str, strike: float, right: str) -> Contract:
        """Return the option on `symbol` expiring `expiry` (YYYYMMDD), `strike`, `right` C|P."""
        return cls(symbol=symbol, sec_type="OPT", expiry=expiry, strike=strike, right=right)

    @property
    def is_option(self) -> bool:
        return self.sec_type == "OPT"

    @property
    def key(self) -> str:
        """'NVDA' for a stock and 'NVDA 20261218 165P' for an option."""
        if not self.is_option:
            return self.symbol
        return f"{self.symbol} {self.expiry} {self.strike:g}{self.right}"

    def __str__(self) -> str:
        return self.key

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Contract:
        """Read a stored row (intent, decision, signal, execution, position): its columns
        symbol, sec_type, expiry, strike, opt_right (NULLs as empty). A snapshot's rendering of
        a row may spell the last one `right`."""
        return cls(
            symbol=row["symbol"],
            sec_type=row.get("sec_type") or "STK",
            expiry=row.get("expiry") or "",
            strike=float(row.get("strike") or 0.0),
            right=row.get("opt_right") or row.get("right") or "",
        )

    def to_row(self) -> dict[str, Any]:
        """The columns symbol, sec_type, expiry, strike, opt_right (a stock's unused ones
        NULL, as every table stores them)."""
        return {
            "symbol": self.symbol,
            "sec_type": self.sec_type,
            "expiry": self.expiry or None,
            "strike": self.strike or None,
            "opt_right": self.right or None,
        }


def with_contract_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """A record function's row with its `contract` entry (a Contract) spelled as the stored
    columns; a row without one is returned as it is (a copy)."""
    out = dict(row)
    contract = out.pop("contract", None)
    if contract is None:
        return out
    if not isinstance(contract, Contract):
        raise TypeError(f"row's contract must be a Contract, got {type(contract).__name__}")
    return {**out, **contract.to_row()}


def flat_dict(obj: Any, fields: tuple[str, ...] = CONTRACT_FIELDS) -> dict[str, Any]:
    """`dataclasses.asdict(obj)` with its contract spelled as the loose `fields` that snapshots,
    prompts and safety-event details have always carried (symbol, sec_type, expiry, strike,
    right; a holding only its symbol), where the contract stood."""
    out: dict[str, Any] = {}
    for name, value in dataclasses.asdict(obj).items():
        if name == "contract":
            out.update({f: value[f] for f in fields})
        else:
            out[name] = value
    return out


def from_flat_dict(cls: type[T], doc: Mapping[str, Any], **more: Any) -> T:
    """Rebuild a dataclass `cls` (with a `contract` field) from what `flat_dict` wrote: the loose
    contract fields become its Contract; entries that are not fields of `cls` (a rendered
    `key`) are left out. A record that carries only a `key` and a symbol (written before the
    contract type) reads its option fields from the key."""
    names = set(getattr(cls, "__dataclass_fields__", {}))
    build: Callable[..., T] = cls
    loose = {f: doc[f] for f in CONTRACT_FIELDS if f in doc}
    key = str(doc.get("key") or "")
    if "sec_type" not in loose and " " in key:  # "AMD 20261218 100C"
        symbol, expiry, strike_right = key.split()
        loose = {"symbol": symbol, "sec_type": "OPT", "expiry": expiry}
        loose |= {"strike": float(strike_right[:-1]), "right": strike_right[-1]}
    contract = Contract(
        symbol=loose["symbol"],
        sec_type=loose.get("sec_type") or "STK",
        expiry=loose.get("expiry") or "",
        strike=float(loose.get("strike") or 0.0),
        right=loose.get("right") or "",
    )
    fields = {k: v for k, v in doc.items() if k in names and k not in CONTRACT_FIELDS}
    return build(contract=contract, **fields, **more)
