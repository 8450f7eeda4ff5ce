"""Position sizing and option math: fractional Kelly, Black-Scholes price, implied vol, Greeks.

Conventions: times in years, rates and yields continuously compounded, volatility annualised.
Theta is per calendar day, vega and rho per 1.00 change (multiply by 0.01 for per-point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from data_lake import DiscardOutput

__all__ = [
    "Greeks",
    "ImpliedVolError",
    "MathInputError",
    "black_scholes_iv",
    "black_scholes_price",
    "calculate_greeks",
    "kelly_criterion",
    "norm_cdf",
    "norm_pdf",
]

Right = Literal["C", "P"]
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT2 = math.sqrt(2.0)


class MathInputError(DiscardOutput, ValueError):
    """An input is outside the domain of the formula (negative price, probability > 1, ...)."""


class ImpliedVolError(DiscardOutput, ValueError):
    """No volatility reproduces the price (outside no-arbitrage bounds, or no convergence)."""


@dataclass(frozen=True, slots=True)
class Greeks:
    price: float
    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float


def norm_pdf(x: float) -> float:
    """Return the standard normal density at x."""
    return math.exp(-0.5 * x * x) / _SQRT_2PI


def norm_cdf(x: float) -> float:
    """Return the standard normal cumulative distribution at x."""
    return 0.5 * math.erfc(-x / _SQRT2)


def _finite(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise MathInputError(f"{name} must be a finite number, got {value!r}")


def _check_right(right: str) -> Right:
    r = right.upper()
    if r in ("C", "CALL"):
        return "C"
    if r in ("P", "PUT"):
        return "P"
    raise MathInputError(f"right must be 'C' or 'P', got {right!r}")


def kelly_criterion(
    win_probability: float,
    payoff_ratio: float,
    fraction: float = 0.5,
    cap: float = 0.25,
) -> float:
    """Return the fraction of capital to risk: fractional Kelly, capped, 0 when there is no edge.

    win_probability: chance of a win, in [0, 1]; payoff_ratio: win size / loss size, > 0;
    fraction: the share of full Kelly to use, in (0, 1]; cap: the most ever returned, in [0, 1].
    """
    for name, value in (
        ("win_probability", win_probability),
        ("payoff_ratio", payoff_ratio),
        ("fraction", fraction),
        ("cap", cap),
    ):
        _finite(name, value)
    if not 0.0 <= win_probability <= 1.0:
        raise MathInputError(f"win_probability must be within [0, 1], got {win_probability}")
    if payoff_ratio <= 0.0:
        raise MathInputError(f"payoff_ratio must be > 0, got {payoff_ratio}")
    if not 0.0 < fraction <= 1.0:
        raise MathInputError(f"fraction must be within (0, 1], got {fraction}")
    if not 0.0 <= cap <= 1.0:
        raise MathInputError(f"cap must be within [0, 1], got {cap}")
    full = win_probability - (1.0 - win_probability) / payoff_ratio
    if full <= 0.0:
        return 0.0
    return min(full * fraction, cap)


def _validate_bs(spot: float, strike: float, t: float, vol: float, r: float, q: float) -> None:
    for name, value in (
        ("spot", spot),
        ("strike", strike),
        ("t", t),
        ("vol", vol),
        ("r", r),
        ("q", q),
    ):
        _finite(name, value)
    if spot <= 0.0:
        raise MathInputError(f"spot must be > 0, got {spot}")
    if strike <= 0.0:
        raise MathInputError(f"strike must be > 0, got {strike}")
    if t < 0.0:
        raise MathInputError(f"t must be >= 0, got {t}")
    if vol < 0.0:
        raise MathInputError(f"vol must be >= 0, got {vol}")


def _intrinsic_forward(
    spot: float, strike: float, t: float, r: float, q: float, right: Right
) -> float:
    fwd_s = spot * math.exp(-q * t)
    pv_k = strike * math.exp(-r * t)
    return max(fwd_s - pv_k, 0.0) if right == "C" else max(pv_k - fwd_s, 0.0)


def _d1_d2(
    spot: float,
    strike: float,
    t: float,
    vol: float,
    r: float,
    q: float,
) -> tuple[float, float]:
    sq = vol * math.sqrt(t)
    d1 = (math.log(spot / strike) + (r - q + 0.5 * vol * vol) * t) / sq
    return d1, d1 - sq


def black_scholes_price(
    spot: float,
    strike: float,
    t: float,
    vol: float,
    r: float = 0.0,
    q: float = 0.0,
    right: str = "C",
) -> float:
    """Return the Black-Scholes-Merton price of a European call or put with dividend yield q."""
    _validate_bs(spot, strike, t, vol, r, q)
    rt = _check_right(right)
    if t == 0.0 or vol == 0.0:
        return _intrinsic_forward(spot, strike, t, r, q, rt)
    d1, d2 = _d1_d2(spot, strike, t, vol, r, q)
    df_q = math.exp(-q * t)
    df_r = math.exp(-r * t)
    if rt == "C":
        return spot * df_q * norm_cdf(d1) - strike * df_r * norm_cdf(d2)
    return strike * df_r * norm_cdf(-d2) - spot * df_q * norm_cdf(-d1)


def calculate_greeks(
    spot: float,
    strike: float,
    t: float,
    vol: float,
    r: float = 0.0,
    q: float = 0.0,
    right: str = "C",
) -> Greeks:
    """Return price, delta, gamma, vega, theta (per calendar day) and rho of a European option."""
    _validate_bs(spot, strike, t, vol, r, q)
    rt = _check_right(right)
    price = black_scholes_price(spot, strike, t, vol, r, q, rt)
    df_q = math.exp(-q * t)
    df_r = math.exp(-r * t)
    if t == 0.0 or vol == 0.0:
        fwd_itm = spot * df_q > strike * df_r
        if rt == "C":
            delta = df_q if fwd_itm else 0.0
        else:
            delta = -df_q if (spot * df_q < strike * df_r) else 0.0
        return Greeks(price, delta, 0.0, 0.0, 0.0, 0.0)
    sqt = math.sqrt(t)
    d1, d2 = _d1_d2(spot, strike, t, vol, r, q)
    pdf1 = norm_pdf(d1)
    gamma = df_q * pdf1 / (spot * vol * sqt)
    vega = spot * df_q * pdf1 * sqt
    common = -spot * df_q * pdf1 * vol / (2.0 * sqt)
    if rt == "C":
        delta = df_q * norm_cdf(d1)
        theta_y = common - r * strike * df_r * norm_cdf(d2) + q * spot * df_q * norm_cdf(d1)
        rho = strike * t * df_r * norm_cdf(d2)
    else:
        delta = -df_q * norm_cdf(-d1)
        theta_y = common + r * strike * df_r * norm_cdf(-d2) - q * spot * df_q * norm_cdf(-d1)
        rho = -strike * t * df_r * norm_cdf(-d2)
    return Greeks(price, delta, gamma, vega, theta_y / 365.0, rho)


def black_scholes_iv(
    price: float,
    spot: float,
    strike: float,
    t: float,
    r: float = 0.0,
    q: float = 0.0,
    right: str = "C",
    *,
    tol: float = 1e-10,
    max_iter: int = 200,
) -> float:
    """Return the volatility at which Black-Scholes reproduces `price`.

    A safeguarded Newton iteration inside a bisection bracket [1e-9, 20]: it converges for
    deep in/out-of-the-money and short-dated options. Raises ImpliedVolError when the price
    is outside the no-arbitrage bounds (below intrinsic value or above the upper bound).
    """
    _validate_bs(spot, strike, t, 0.0, r, q)
    _finite("price", price)
    rt = _check_right(right)
    if t == 0.0:
        raise ImpliedVolError("no implied volatility at expiry (t == 0)")
    lower = _intrinsic_forward(spot, strike, t, r, q, rt)
    upper = spot * math.exp(-q * t) if rt == "C" else strike * math.exp(-r * t)
    eps = 1e-12 * max(1.0, spot, strike)
    if price < lower - eps or price > upper + eps:
        raise ImpliedVolError(
            f"price {price:.6g} is outside the no-arbitrage bounds [{lower:.6g}, {upper:.6g}]"
        )
    if price <= lower + eps:
        raise ImpliedVolError(
            f"price {price:.6g} equals intrinsic value: implied vol is 0 or undefined"
        )
    if price >= upper - eps:
        raise ImpliedVolError(f"price {price:.6g} equals the upper bound: implied vol is unbounded")
    lo, hi = 1e-9, 20.0
    if black_scholes_price(spot, strike, t, hi, r, q, rt) < price:
        raise ImpliedVolError(f"price {price:.6g} needs a volatility above {hi}")
    vol = 0.5
    for _ in range(max_iter):
        value = black_scholes_price(spot, strike, t, vol, r, q, rt) - price
        if abs(value) < tol * max(1.0, price):
            return vol
        if value > 0.0:
            hi = vol
        else:
            lo = vol
        vega = calculate_greeks(spot, strike, t, vol, r, q, rt).vega
        step_ok = vega > 1e-12
        candidate = vol - value / vega if step_ok else -1.0
        vol = candidate if lo < candidate < hi else 0.5 * (lo + hi)
        if hi - lo < 1e-14:
            return vol
    raise ImpliedVolError(f"implied volatility did not converge in {max_iter} iterations")
