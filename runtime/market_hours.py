"""Parse IB's liquidHours/tradingHours strings and tell whether a moment is inside them."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["is_open", "sessions"]


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
