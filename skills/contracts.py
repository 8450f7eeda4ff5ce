"""One spelling of a contract's identity, shared by positions, signals, intents and orders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["contract_key", "row_key"]


def contract_key(
    symbol: str,
    sec_type: str,
    expiry: str | None = "",
    strike: float | None = 0.0,
    right: str | None = "",
) -> str:
    """Return 'NVDA' for a stock and 'NVDA 20261218 165P' for an option."""
    if sec_type != "OPT":
        return symbol
    return f"{symbol} {expiry or ''} {strike or 0.0:g}{right or ''}"


def row_key(row: Mapping[str, Any]) -> str:
    """The key of a stored row (intent, decision, signal, execution): `opt_right` or `right`."""
    return contract_key(
        row["symbol"],
        row["sec_type"],
        row.get("expiry"),
        row.get("strike"),
        row.get("opt_right") or row.get("right"),
    )
