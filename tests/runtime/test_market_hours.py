import datetime as dt

from runtime.market_hours import is_open, sessions

HOURS = "20261120:0930-20261120:1600;20261121:CLOSED;20261123:0930-20261123:1600"
UTC = dt.UTC


def test_open_inside_liquid_hours_in_exchange_time():
    assert is_open(HOURS, "US/Eastern", dt.datetime(2026, 11, 20, 15, 0, tzinfo=UTC))  # 10:00 ET
    assert not is_open(HOURS, "US/Eastern", dt.datetime(2026, 11, 20, 14, 0, tzinfo=UTC))  # 09:00
    assert not is_open(HOURS, "US/Eastern", dt.datetime(2026, 11, 20, 21, 0, tzinfo=UTC))  # 16:00


def test_closed_days_and_garbage_never_open():
    assert not is_open(HOURS, "US/Eastern", dt.datetime(2026, 11, 21, 16, 0, tzinfo=UTC))
    assert sessions("garbage;2026:xx-yy", "US/Eastern") == []
    assert not is_open(HOURS, "Not/AZone", dt.datetime(2026, 11, 20, 15, 0, tzinfo=UTC))


def test_dst_change_is_respected():
    # 2026-11-01: US DST ends; 09:30 ET is 14:30 UTC afterwards, 13:30 UTC before.
    hours = "20261030:0930-20261030:1600;20261102:0930-20261102:1600"
    assert is_open(hours, "US/Eastern", dt.datetime(2026, 10, 30, 13, 45, tzinfo=UTC))
    assert not is_open(hours, "US/Eastern", dt.datetime(2026, 11, 2, 14, 15, tzinfo=UTC))
