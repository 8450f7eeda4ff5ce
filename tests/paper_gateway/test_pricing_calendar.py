"""The gateway's own Black-Scholes and its exchange calendar, against published values."""

import datetime as dt
import math

import pytest

from paper_gateway.holidays import HOLIDAYS, is_early_close, is_trading_day
from paper_gateway.instruments import Catalogue
from paper_gateway.pricing import bs_greeks


def test_black_scholes_matches_the_textbook_example():
    call = bs_greeks(100.0, 100.0, 1.0, 0.2, 0.05, "C")
    put = bs_greeks(100.0, 100.0, 1.0, 0.2, 0.05, "P")
    assert call.price == pytest.approx(10.4506, abs=1e-4)
    assert put.price == pytest.approx(5.5735, abs=1e-4)
    assert call.delta == pytest.approx(0.6368, abs=1e-4)
    assert call.delta - put.delta == pytest.approx(1.0)
    assert call.gamma == pytest.approx(put.gamma) and call.vega == pytest.approx(put.vega)
    assert call.price - put.price == pytest.approx(100.0 - 100.0 * math.exp(-0.05))


def test_an_expired_option_is_worth_its_intrinsic_value():
    assert bs_greeks(110.0, 100.0, 0.0, 0.3, 0.05, "C").price == pytest.approx(10.0)
    assert bs_greeks(110.0, 100.0, 0.0, 0.3, 0.05, "P").price == 0.0


def test_the_2026_and_2027_calendars_have_ten_holidays_each_on_weekdays():
    for year in (2026, 2027):
        days = [d for d in HOLIDAYS if d.year == year]
        assert len(days) == 10 and all(d.weekday() < 5 for d in days)
    assert not is_trading_day(dt.date(2026, 11, 26))  # Thanksgiving
    assert not is_trading_day(dt.date(2027, 3, 26))  # Good Friday
    assert is_early_close(dt.date(2026, 11, 27)) and is_early_close(dt.date(2026, 12, 24))
    assert is_trading_day(dt.date(2027, 12, 31))  # New Year's Day 2028 is a Saturday


def test_a_weekly_expiry_on_good_friday_moves_to_the_thursday_before():
    expiries = Catalogue(dt.date(2026, 3, 30)).expiries["AAPL"]
    assert "20260402" in expiries and "20260403" not in expiries
