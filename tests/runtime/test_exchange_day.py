"""Daily limits roll over at the exchange's midnight (New York), not at midnight UTC."""

import datetime as dt

from runtime.market_hours import exchange_day, exchange_day_start


def test_the_exchange_day_is_new_yorks_calendar_day():
    late_utc = dt.datetime(2026, 11, 21, 3, 30, tzinfo=dt.UTC)  # 22:30 on the 20th in New York
    assert exchange_day(late_utc) == "20261120"
    assert exchange_day(dt.datetime(2026, 11, 21, 5, 1, tzinfo=dt.UTC)) == "20261121"
    summer = dt.datetime(2026, 7, 1, 3, 59, tzinfo=dt.UTC)  # EDT: UTC-4
    assert exchange_day(summer) == "20260630"


def test_the_exchange_day_starts_at_new_york_midnight_in_utc():
    now = dt.datetime(2026, 11, 21, 3, 30, tzinfo=dt.UTC)
    assert exchange_day_start(now) == dt.datetime(2026, 11, 20, 5, 0, tzinfo=dt.UTC)
    assert exchange_day_start(dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)) == dt.datetime(
        2026, 7, 1, 4, 0, tzinfo=dt.UTC
    )
