"""runtime/restart_window.py: the window around IB Gateway's daily restart, and its config."""

import datetime as dt

import pytest

from runtime.config import ConfigError, parse_config
from runtime.restart_window import RestartWindow

NY = "America/New_York"


def window(at="23:45", tz=NY, guard=5):
    cfg = parse_config(
        {
            "mode": "paper",
            "broker": {"daily_restart": at, "daily_restart_tz": tz, "restart_guard_min": guard},
        }
    )
    w = RestartWindow.from_config(cfg.broker)
    assert w is not None
    return w


def ny(y, m, d, hh, mm, ss=0):
    from zoneinfo import ZoneInfo

    return dt.datetime(y, m, d, hh, mm, ss, tzinfo=ZoneInfo(NY)).astimezone(dt.UTC)


def test_the_window_spans_the_guard_before_and_after_the_restart():
    w = window()
    assert w.current(ny(2026, 11, 20, 23, 39, 59)) is None
    assert w.current(ny(2026, 11, 20, 23, 40)) is not None
    span = w.current(ny(2026, 11, 20, 23, 49, 59))
    assert span is not None and span.restart == ny(2026, 11, 20, 23, 45)
    assert w.current(ny(2026, 11, 20, 23, 50)) is None
    assert w.reason == "gateway restart window 23:45±5 min America/New_York"
    waiting = "waiting for gateway restart (23:45, until 23:50 America/New_York)"
    assert w.waiting_text(span) == waiting


def test_a_window_straddling_midnight_holds_on_both_days():
    w = window("23:58", guard=5)
    assert w.current(ny(2026, 11, 21, 0, 2)) is not None  # the restart of the day before
    assert w.current(ny(2026, 11, 20, 23, 55)) is not None
    assert w.current(ny(2026, 11, 21, 0, 3)) is None
    assert w.latest_started(ny(2026, 11, 21, 0, 10)).restart == ny(2026, 11, 20, 23, 58)


def test_no_daily_restart_means_no_window():
    assert RestartWindow.from_config(parse_config({"mode": "paper"}).broker) is None


@pytest.mark.parametrize(
    ("broker", "key", "why"),
    [
        ({"daily_restart": "3:00"}, "broker.daily_restart", "HH:MM"),
        ({"daily_restart": "24:10"}, "broker.daily_restart", "00:00..23:59"),
        ({"daily_restart_tz": "Mars/Olympus"}, "broker.daily_restart_tz", "unknown time zone"),
        ({"restart_guard_min": 500}, "broker.restart_guard_min", "less than or equal to 120"),
        ({"fresh_data_timeout_s": 0}, "broker.fresh_data_timeout_s", "greater than 0"),
        ({"max_market_data_lines": 0}, "broker.max_market_data_lines", "greater than or equal"),
    ],
)
def test_bad_restart_and_pacing_keys_are_refused_naming_the_key(broker, key, why):
    with pytest.raises(ConfigError) as err:
        parse_config({"mode": "paper", "broker": broker})
    line = next(x for x in str(err.value).splitlines() if key in x)
    assert why in line
