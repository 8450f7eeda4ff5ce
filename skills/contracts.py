"""One spelling of a contract's identity, shared by positions, signals, intents and orders."""

from __future__ import annotations

__all__ = ["contract_key"]


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
