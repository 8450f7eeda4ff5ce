"""Black-Scholes price and Greeks for the gateway's option quotes.

Written independently of the project's own maths (`skills.math_core`), so a bug there shows
up in end-to-end tests instead of being mirrored by the broker the tests trust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["OptionGreeks", "bs_greeks"]


@dataclass(frozen=True, slots=True)
class OptionGreeks:
    """Model value and sensitivities; vega per 1.00 of vol, theta per calendar day."""

    price: float
    delta: float
    gamma: float
    vega: float
    theta: float


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def bs_greeks(
    spot: float, strike: float, years: float, vol: float, rate: float, right: str
) -> OptionGreeks:
    """Price a European call ("C") or put ("P") without dividends and return its Greeks."""
    if spot <= 0 or strike <= 0 or vol < 0 or years < 0:
        raise ValueError(f"bad inputs: spot={spot} strike={strike} t={years} vol={vol}")
    is_call = right.upper().startswith("C")
    discount = math.exp(-rate * years)
    if years == 0 or vol == 0:
        forward_value = spot - strike * discount
        intrinsic = max(forward_value, 0.0) if is_call else max(-forward_value, 0.0)
        if is_call:
            delta = 1.0 if forward_value > 0 else 0.0
        else:
            delta = -1.0 if forward_value < 0 else 0.0
        return OptionGreeks(intrinsic, delta, 0.0, 0.0, 0.0)
    root_t = math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * years) / (vol * root_t)
    d2 = d1 - vol * root_t
    density = _pdf(d1)
    gamma = density / (spot * vol * root_t)
    vega = spot * density * root_t
    decay = -spot * density * vol / (2.0 * root_t)
    if is_call:
        price = spot * _cdf(d1) - strike * discount * _cdf(d2)
        delta = _cdf(d1)
        theta_year = decay - rate * strike * discount * _cdf(d2)
    else:
        price = strike * discount * _cdf(-d2) - spot * _cdf(-d1)
        delta = _cdf(d1) - 1.0
        theta_year = decay + rate * strike * discount * _cdf(-d2)
    return OptionGreeks(price, delta, gamma, vega, theta_year / 365.0)
