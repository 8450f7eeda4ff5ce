"""Loaded by every Python process started with this folder on PYTHONPATH: the process's wall
clock (time.time, time.time_ns, datetime.now/utcnow/today) is shifted by the number of seconds
written in the file named by WALLCLOCK_OFFSET_FILE, read on every call. The monotonic clock is
left alone -- as when NTP or a person steps the system clock. Drills only."""

from __future__ import annotations

import datetime as _dt
import os
import time as _timemod

_FILE = os.environ.get("WALLCLOCK_OFFSET_FILE") or ""

if _FILE:
    _real_time = _timemod.time
    _real_time_ns = _timemod.time_ns

    def _offset() -> float:
        try:
            with open(_FILE, encoding="ascii") as f:
                return float(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    def _stepped() -> float:
        return _real_time() + _offset()

    def _time_ns() -> int:
        return _real_time_ns() + int(_offset() * 1e9)

    class _SteppedDateTime(_dt.datetime):
        @classmethod
        def now(cls, tz: _dt.tzinfo | None = None) -> _dt.datetime:  # type: ignore[override]  # a plain datetime: this class stands in for datetime
            return _dt.datetime.fromtimestamp(_stepped(), tz)

        @classmethod
        def utcnow(cls) -> _dt.datetime:  # type: ignore[override]  # a plain datetime: this class stands in for datetime
            return _dt.datetime.fromtimestamp(_stepped(), _dt.UTC).replace(tzinfo=None)

        @classmethod
        def today(cls) -> _dt.datetime:  # type: ignore[override]  # a plain datetime: this class stands in for datetime
            return _dt.datetime.fromtimestamp(_stepped())

    _timemod.time = _stepped
    _timemod.time_ns = _time_ns
    _dt.datetime = _SteppedDateTime  # type: ignore[misc]  # swapping the class is the point
