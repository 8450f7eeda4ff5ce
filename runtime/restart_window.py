"""The gateway's daily restart window: no new orders around IB Gateway's daily restart.

IB Gateway (under IBC) restarts once a day at a configured time; its sockets drop and come
back a minute or so later. `[broker] daily_restart = "HH:MM"` (in `daily_restart_tz`) names
that time; from `restart_guard_min` minutes before to `restart_guard_min` minutes after it the
daemon sends no new orders. Times are judged on the injected wall clock (an aware datetime
passed in), never read here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from .config import BrokerConfig

__all__ = ["RestartWindow", "Span", "parse_hh_mm", "zone_named"]


def parse_hh_mm(value: str) -> dt.time:
    """Return the time of an "HH:MM" string (24 h); raise ValueError saying why not."""
    hh, sep, mm = value.partition(":")
    if not (sep and len(hh) == 2 and len(mm) == 2 and hh.isdigit() and mm.isdigit()):
        raise ValueError('must be "HH:MM" (24 h, e.g. "23:45")')
    if int(hh) > 23 or int(mm) > 59:
        raise ValueError("must be a time of day, 00:00..23:59")
    return dt.time(int(hh), int(mm))


def zone_named(name: str) -> ZoneInfo:
    """Return the IANA time zone `name`; raise ValueError when it is not known."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("unknown time zone (an IANA name, e.g. America/New_York)") from exc


@dataclass(frozen=True, slots=True)
class Span:
    """One day's window: [start, end) around the restart instant, aware datetimes."""

    start: dt.datetime
    restart: dt.datetime
    end: dt.datetime


@dataclass(frozen=True, slots=True)
class RestartWindow:
    at: dt.time
    zone: ZoneInfo
    guard: dt.timedelta

    @classmethod
    def from_config(cls, cfg: BrokerConfig) -> RestartWindow | None:
        """The configured window, or None when `[broker] daily_restart` is empty."""
        if not cfg.daily_restart:
            return None
        return cls(
            parse_hh_mm(cfg.daily_restart),
            zone_named(cfg.daily_restart_tz),
            dt.timedelta(minutes=cfg.restart_guard_min),
        )

    def _spans(self, now: dt.datetime) -> list[Span]:
        local = now.astimezone(self.zone)
        out = []
        for shift in (-1, 0, 1):  # a window may straddle midnight
            day = local.date() + dt.timedelta(days=shift)
            restart = dt.datetime.combine(day, self.at, self.zone)
            out.append(Span(restart - self.guard, restart, restart + self.guard))
        return out

    def current(self, now: dt.datetime) -> Span | None:
        """The window `now` (aware) lies in, or None."""
        return next((s for s in self._spans(now) if s.start <= now < s.end), None)

    def latest_started(self, now: dt.datetime) -> Span:
        """The most recent window that started at or before `now`."""
        return max((s for s in self._spans(now) if s.start <= now), key=lambda s: s.start)

    @property
    def reason(self) -> str:
        """The gate's refusal reason: "gateway restart window HH:MM±N min ZONE"."""
        minutes = int(self.guard.total_seconds() // 60)
        return f"gateway restart window {self.at:%H:%M}±{minutes} min {self.zone.key}"

    def waiting_text(self, span: Span) -> str:
        """What `status` shows: "waiting for gateway restart (HH:MM, until HH:MM ZONE)"."""
        end = span.end.astimezone(self.zone)
        return f"waiting for gateway restart ({self.at:%H:%M}, until {end:%H:%M} {self.zone.key})"
