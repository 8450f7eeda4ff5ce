"""Parse IB's liquidHours/tradingHours strings and tell whether a moment is inside them."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["EXCHANGE_TZ", "exchange_day", "exchange_day_start", "is_open", "sessions"]

# The exchange whose calendar day bounds the daily limits (US equities and options).
EXCHANGE_TZ = ZoneInfo("America/New_York")


def sessions(hours: str, tz_name: str) -> list[tuple[dt.datetime, dt.datetime]]:
    """Return the open sessions in `hours` (e.g. '20261120:0930-20261120:1600;20261121:CLOSED')
    as timezone-aware (start, end) pairs. Malformed parts are skipped (they never open)."""
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        return []
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for part in hours.split(";"):
        part = part.strip()
        if not part or part.endswith("CLOSED") or "-" not in part:
            continue
        start_s, end_s = part.split("-", 1)
        try:
            start = dt.datetime.strptime(start_s, "%Y%m%d:%H%M").replace(tzinfo=tz)
            end = dt.datetime.strptime(end_s, "%Y%m%d:%H%M").replace(tzinfo=tz)
        except ValueError:
            continue
        if end > start:
            out.append((start, end))
    return out


def is_open(hours: str, tz_name: str, now: dt.datetime) -> bool:
    """True when the aware datetime `now` falls inside one of the sessions."""
    return any(start <= now < end for start, end in sessions(hours, tz_name))


def exchange_day(now: dt.datetime) -> str:
    """The exchange's calendar day (YYYYMMDD) at the aware moment `now`: daily limits (order
    count, LLM budget) roll over at midnight New York time, not at midnight UTC."""
    return now.astimezone(EXCHANGE_TZ).strftime("%Y%m%d")


def exchange_day_start(now: dt.datetime) -> dt.datetime:
    """Midnight of the exchange's calendar day containing `now`, as an aware UTC datetime."""
    local = now.astimezone(EXCHANGE_TZ)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.astimezone(dt.UTC)
