"""The US equities exchange calendar: NYSE/Nasdaq full holidays and 13:00 early closes.

Dates are the exchanges' published calendars for 2026 and 2027. Outside those years only
weekends are closed (the gateway says so in its README rather than guessing rules).
"""

from __future__ import annotations

import datetime as dt

__all__ = [
    "CALENDAR_YEARS",
    "EARLY_CLOSES",
    "HOLIDAYS",
    "is_early_close",
    "is_trading_day",
    "session_hours",
]

CALENDAR_YEARS = frozenset({2026, 2027})

HOLIDAYS: dict[dt.date, str] = {
    dt.date(2026, 1, 1): "New Year's Day",
    dt.date(2026, 1, 19): "Martin Luther King, Jr. Day",
    dt.date(2026, 2, 16): "Washington's Birthday",
    dt.date(2026, 4, 3): "Good Friday",
    dt.date(2026, 5, 25): "Memorial Day",
    dt.date(2026, 6, 19): "Juneteenth National Independence Day",
    dt.date(2026, 7, 3): "Independence Day (observed)",
    dt.date(2026, 9, 7): "Labor Day",
    dt.date(2026, 11, 26): "Thanksgiving Day",
    dt.date(2026, 12, 25): "Christmas Day",
    dt.date(2027, 1, 1): "New Year's Day",
    dt.date(2027, 1, 18): "Martin Luther King, Jr. Day",
    dt.date(2027, 2, 15): "Washington's Birthday",
    dt.date(2027, 3, 26): "Good Friday",
    dt.date(2027, 5, 31): "Memorial Day",
    dt.date(2027, 6, 18): "Juneteenth National Independence Day (observed)",
    dt.date(2027, 7, 5): "Independence Day (observed)",
    dt.date(2027, 9, 6): "Labor Day",
    dt.date(2027, 11, 25): "Thanksgiving Day",
    dt.date(2027, 12, 24): "Christmas Day (observed)",
}

# regular session ends at 13:00 exchange time (extended hours at 17:00)
EARLY_CLOSES: frozenset[dt.date] = frozenset(
    {
        dt.date(2026, 11, 27),  # day after Thanksgiving
        dt.date(2026, 12, 24),  # Christmas Eve
        dt.date(2027, 11, 26),  # day after Thanksgiving
    }
)


def is_trading_day(day: dt.date) -> bool:
    """Return whether US equity exchanges open on `day` (a weekday and not a holiday)."""
    return day.weekday() < 5 and day not in HOLIDAYS


def is_early_close(day: dt.date) -> bool:
    """Return whether the regular session of `day` ends at 13:00 exchange time."""
    return day in EARLY_CLOSES


def session_hours(day: dt.date, regular_only: bool) -> tuple[dt.time, dt.time] | None:
    """Return the (open, close) exchange times of `day`'s stock session, or None if closed.

    Regular hours are 09:30-16:00 (13:00 on early closes); extended hours 04:00-20:00 (17:00).
    """
    if not is_trading_day(day):
        return None
    early = is_early_close(day)
    if regular_only:
        return dt.time(9, 30), dt.time(13 if early else 16)
    return dt.time(4), dt.time(17 if early else 20)
