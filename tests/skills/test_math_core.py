import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from skills.math_core import (
    ImpliedVolError,
    MathInputError,
    black_scholes_iv,
    black_scholes_price,
    calculate_greeks,
    kelly_criterion,
)


def test_textbook_prices_hull_example_15_6():
    # Hull, Options Futures and Other Derivatives: S=42 K=40 r=10% vol=20% T=0.5
    assert black_scholes_price(42, 40, 0.5, 0.2, 0.10, 0.0, "C") == pytest.approx(4.76, abs=0.005)
    assert black_scholes_price(42, 40, 0.5, 0.2, 0.10, 0.0, "P") == pytest.approx(0.81, abs=0.005)


def test_textbook_price_with_dividend_yield():
    # Hull index option example: S=930 K=900 r=8% q=3% vol=20% T=2 months
    assert black_scholes_price(930, 900, 2 / 12, 0.2, 0.08, 0.03, "C") == pytest.approx(
        51.83, abs=0.01
    )


def test_textbook_greeks_hull_chapter_19():
    # S=49 K=50 r=5% vol=20% T=20 weeks: delta .522, gamma .066, vega 12.1, theta -4.31/yr
    g = calculate_greeks(49, 50, 0.3846, 0.2, 0.05, 0.0, "C")
    assert g.price == pytest.approx(2.40, abs=0.005)
    assert g.delta == pytest.approx(0.522, abs=0.001)
    assert g.gamma == pytest.approx(0.066, abs=0.001)
    assert g.vega == pytest.approx(12.1, abs=0.05)
    assert g.theta * 365 == pytest.approx(-4.31, abs=0.01)
    assert g.rho == pytest.approx(8.91, abs=0.01)


@given(
    spot=st.floats(5, 1000),
    k_ratio=st.floats(0.5, 1.5),
    t=st.floats(1 / 365, 3),
    vol=st.floats(0.05, 2.0),
    r=st.floats(0, 0.1),
    q=st.floats(0, 0.05),
)
def test_put_call_parity(spot, k_ratio, t, vol, r, q):
    strike = spot * k_ratio
    c = black_scholes_price(spot, strike, t, vol, r, q, "C")
    p = black_scholes_price(spot, strike, t, vol, r, q, "P")
    assert c - p == pytest.approx(
        spot * math.exp(-q * t) - strike * math.exp(-r * t), abs=1e-8 * max(spot, strike)
    )


@given(
    spot=st.floats(5, 1000),
    k_ratio=st.floats(0.6, 1.6),
    t=st.floats(2 / 365, 2),
    vol=st.floats(0.05, 1.5),
    right=st.sampled_from(["C", "P"]),
)
def test_implied_vol_round_trip(spot, k_ratio, t, vol, right):
    strike = spot * k_ratio
    price = black_scholes_price(spot, strike, t, vol, 0.03, 0.0, right)
    vega = calculate_greeks(spot, strike, t, vol, 0.03, 0.0, right).vega
    assume(vega > 1e-4 * spot)  # far wings: the price does not pin down the vol numerically
    assert black_scholes_iv(price, spot, strike, t, 0.03, 0.0, right) == pytest.approx(
        vol, rel=1e-5
    )


def test_implied_vol_converges_deep_itm_otm_and_short_dated():
    for spot, strike, t, vol, right in [
        (100, 40, 0.5, 0.6, "C"),
        (100, 180, 1.0, 0.5, "C"),
        (100, 101, 1 / 365, 0.3, "P"),
        (100, 60, 2.0, 0.9, "P"),
    ]:
        price = black_scholes_price(spot, strike, t, vol, 0.01, 0.0, right)
        assert black_scholes_iv(price, spot, strike, t, 0.01, 0.0, right) == pytest.approx(
            vol, rel=1e-4
        )


def test_price_outside_no_arbitrage_bounds_is_a_clear_error():
    with pytest.raises(ImpliedVolError, match="no-arbitrage"):
        black_scholes_iv(1.0, 100, 50, 0.5, 0.0, 0.0, "C")  # below intrinsic 50
    with pytest.raises(ImpliedVolError, match="no-arbitrage"):
        black_scholes_iv(101.0, 100, 50, 0.5, 0.0, 0.0, "C")  # above the spot


def test_bad_inputs_are_refused_with_the_name():
    with pytest.raises(MathInputError, match="spot"):
        black_scholes_price(-1, 100, 1, 0.2)
    with pytest.raises(MathInputError, match="vol"):
        calculate_greeks(100, 100, 1, float("nan"))
    with pytest.raises(MathInputError, match="right"):
        black_scholes_price(100, 100, 1, 0.2, right="X")


def test_kelly_full_and_fractional_values():
    assert kelly_criterion(0.6, 1.0, fraction=1.0, cap=1.0) == pytest.approx(0.2)
    assert kelly_criterion(0.6, 1.0, fraction=0.5, cap=1.0) == pytest.approx(0.1)
    assert kelly_criterion(0.6, 1.0, fraction=1.0, cap=0.05) == pytest.approx(0.05)


def test_kelly_is_zero_without_edge():
    assert kelly_criterion(0.5, 1.0) == 0.0
    assert kelly_criterion(0.3, 1.5) == 0.0


@pytest.mark.parametrize("args", [(1.2, 1.0), (0.5, 0.0), (0.5, -1.0), (float("nan"), 1.0)])
def test_kelly_impossible_inputs_raise(args):
    with pytest.raises(MathInputError):
        kelly_criterion(*args)


@given(p=st.floats(0, 1), b=st.floats(0.01, 100), f=st.floats(0.01, 1), cap=st.floats(0, 1))
def test_kelly_bounds(p, b, f, cap):
    k = kelly_criterion(p, b, f, cap)
    assert 0.0 <= k <= cap
    assert k <= max(0.0, p - (1 - p) / b) + 1e-12
