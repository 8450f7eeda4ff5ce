"""What the real IB service does in production, played by the paper gateway.

The codes and texts of farm status, entitlement, competing-session, market-data-line and
historical-pacing errors; the daily restart schedule; the historical-data pacing rules. Every
rule runs on the gateway's own clock (`GatewayCore.now`), which tests step through the admin
channel (`advance_clock`) instead of waiting.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "COMPETING_SESSION",
    "DELAY",
    "DELAYED_PRICE_TICKS",
    "DELAYED_SIZE_TICKS",
    "ENTITLEMENTS",
    "FARMS",
    "HISTORICAL_PACING",
    "MAX_TICKERS",
    "NOT_SUBSCRIBED",
    "NOT_SUBSCRIBED_DELAYED_AVAILABLE",
    "NOT_SUBSCRIBED_DISPLAYING_DELAYED",
    "NOT_SUBSCRIBED_NO_DELAYED",
    "WEEKDAYS",
    "DelayedPrices",
    "Farm",
    "HistoricalPacer",
    "RestartSchedule",
]

# --- farm status (error messages with reqId -1; warnings, never a disconnect) ---------------


@dataclass(frozen=True, slots=True)
class Farm:
    ok_code: int
    ok_text: str
    broken_code: int
    broken_text: str


FARMS: dict[str, Farm] = {
    "market": Farm(
        2104,
        "Market data farm connection is OK:usfarm",
        2103,
        "Market data farm connection is broken:usfarm",
    ),
    "historical": Farm(
        2106,
        "HMDS data farm connection is OK:ushmds",
        2105,
        "HMDS data farm connection is broken:ushmds",
    ),
    "secdef": Farm(
        2158,
        "Sec-def data farm connection is OK:secdefnj",
        2157,
        "Sec-def data farm connection is broken:secdefnj",
    ),
}

# --- market-data entitlements ----------------------------------------------------------------
ENTITLEMENTS = ("live", "delayed", "none")
# 354 to a real-time request when delayed data could be had (IB appends symbol and venue)
NOT_SUBSCRIBED_DELAYED_AVAILABLE = "Requested market data is not subscribed.Delayed market data is available.{symbol} {venue}/TOP/ALL"  # noqa: E501
# 354 to a real-time request when no delayed data either
NOT_SUBSCRIBED = (
    "Requested market data is not subscribed. Check API status by selecting the Account menu "
    "then under Management choose Market Data Subscription Manager and confirm the relevant "
    "market data is not paused."
)
NOT_SUBSCRIBED_DISPLAYING_DELAYED = (
    "Requested market data is not subscribed. Displaying delayed market data."  # 10167
)
NOT_SUBSCRIBED_NO_DELAYED = (
    "Requested market data is not subscribed. Delayed market data is not enabled."  # 10168
)
COMPETING_SESSION = "No market data during competing live session"  # 10197
MAX_TICKERS = "Max number of tickers has been reached"  # 101
HISTORICAL_PACING = (
    "Historical Market Data Service error message:Historical data request pacing violation"  # 162
)

# real-time tick type -> its delayed twin (IB's TickType: DELAYED_BID 66 ... DELAYED_CLOSE 75)
DELAYED_PRICE_TICKS = {1: 66, 2: 67, 4: 68, 9: 75}
DELAYED_SIZE_TICKS = {0: 69, 3: 70, 5: 71, 8: 74}
DELAYED_OPTION_TICKS = {10: 80, 11: 81, 12: 82, 13: 83}

DELAY = dt.timedelta(minutes=15)  # US equities: delayed data is 15 minutes old


class DelayedPrices:
    """Each stock's price as the delayed feed shows it: the price of 15 minutes ago on the
    gateway's clock (the earliest price known when the gateway is younger than that)."""

    def __init__(self) -> None:
        self._log: dict[str, deque[tuple[dt.datetime, float]]] = {}

    def record(self, now: dt.datetime, prices: dict[str, float]) -> None:
        cutoff = now - DELAY
        for symbol, price in prices.items():
            log = self._log.setdefault(symbol, deque())
            if not log or log[-1][1] != price:
                log.append((now, price))
            while len(log) >= 2 and log[1][0] <= cutoff:
                log.popleft()  # keep one price at or before the cutoff

    def price(self, symbol: str, now: dt.datetime) -> float | None:
        log = self._log.get(symbol)
        if not log:
            return None
        cutoff = now - DELAY
        shown = log[0][1]
        for at, price in log:
            if at > cutoff:
                break
            shown = price
        return shown

    def clear(self) -> None:
        self._log.clear()


# --- daily restart ---------------------------------------------------------------------------
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class RestartSchedule:
    """The gateway's daily auto-restart at HH:MM in a time zone; on `reauth_weekday` the
    restart needs a new login (IB's weekly re-authentication)."""

    def __init__(self, at: str, tz: str, reauth_weekday: str | None = None) -> None:
        try:
            hh, mm = at.split(":")
            self.at = dt.time(int(hh), int(mm))
        except ValueError as exc:
            raise ValueError(f"daily restart must be HH:MM, got {at!r}") from exc
        try:
            self.zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc
        if reauth_weekday is not None and reauth_weekday.lower()[:3] not in WEEKDAYS:
            raise ValueError(f"re-authentication weekday must be one of {WEEKDAYS}")
        self.reauth_weekday = (
            None if reauth_weekday is None else WEEKDAYS.index(reauth_weekday.lower()[:3])
        )

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """Return the first restart instant strictly after `when` (an aware datetime)."""
        local = when.astimezone(self.zone)
        day = local.date()
        while True:
            candidate = dt.datetime.combine(day, self.at, self.zone)
            if candidate > local:
                return candidate
            day += dt.timedelta(days=1)

    def needs_login(self, instant: dt.datetime) -> bool:
        return (
            self.reauth_weekday is not None
            and instant.astimezone(self.zone).weekday() == self.reauth_weekday
        )


# --- historical-data pacing ------------------------------------------------------------------
IDENTICAL_WINDOW = dt.timedelta(seconds=15)
SAME_CONTRACT_WINDOW = dt.timedelta(seconds=2)
SAME_CONTRACT_MAX = 5  # "six or more requests for the same contract ... within two seconds"
ANY_WINDOW = dt.timedelta(minutes=10)
ANY_MAX = 60


class HistoricalPacer:
    """IB's historical-data pacing rules, for every client of the gateway together: no
    identical request within 15 s, not six or more requests for one contract and whatToShow
    within 2 s, at most 60 requests within 10 minutes. Only requests that were served count."""

    def __init__(self) -> None:
        self._served: deque[tuple[dt.datetime, tuple[object, ...]]] = deque()

    def admit(self, now: dt.datetime, key: tuple[object, ...], contract_key: object) -> bool:
        """Record and admit a request, or return False for a pacing violation."""
        while self._served and now - self._served[0][0] >= ANY_WINDOW:
            self._served.popleft()
        if len(self._served) >= ANY_MAX:
            return False
        same_contract = 0
        for at, k in self._served:
            if k == key and now - at < IDENTICAL_WINDOW:
                return False
            if k[0] == contract_key and now - at < SAME_CONTRACT_WINDOW:
                same_contract += 1
        if same_contract >= SAME_CONTRACT_MAX:
            return False
        self._served.append((now, key))
        return True

    def clear(self) -> None:
        self._served.clear()
