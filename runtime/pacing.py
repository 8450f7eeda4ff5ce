"""Pacing of requests the broker adapter sends: queue, never error.

IB refuses historical-data requests beyond its pacing rules (error 162) and streaming
subscriptions beyond the account's market-data lines (error 101). The adapter asks these
small bookkeepers before it sends: how long to wait, whether a cached answer serves, which
subscription to give up for a new one. Time is the injected monotonic clock; nothing here
sleeps or sends.

IB's historical rules (for every client of the account together): no identical request
within 15 s; not six or more requests for one contract and whatToShow within 2 s; at most 60
requests within 10 minutes. IB counts what earlier processes sent too: the pacer starts from
their requests (`sent`, kept in the data directory by runtime/pacing_log.py).
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Backoff", "HistoryPacer", "LineBook", "Sent"]

# one historical request counted against IB's rules: (monotonic time it counts from: its
# answer, or its send while in flight; request key; contract)
Sent = tuple[float, Hashable, Hashable]


@dataclass
class Backoff:
    """Delays that double from `initial` up to `maximum`, with +-50% jitter."""

    initial: float
    maximum: float
    rng: random.Random
    _next: float = 0.0

    def next(self) -> float:
        base = self._next or self.initial
        self._next = min(base * 2, self.maximum)
        return min(base, self.maximum) * (0.5 + self.rng.random())

    def reset(self) -> None:
        self._next = 0.0


class HistoryPacer:
    """Keeps historical-data requests under IB's pacing rules. `key` identifies a request
    (contract, whatToShow, end, duration, bar size, useRTH); `contract` is its contract and
    whatToShow (the 2-second burst rule)."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        identical_s: float = 15.0,
        window_s: float = 600.0,
        max_in_window: int = 60,
        burst_s: float = 2.0,
        burst_max: int = 5,
        margin_s: float = 0.5,
        sent: Iterable[Sent] = (),
    ) -> None:
        self.monotonic = monotonic
        self.identical_s = identical_s
        self.window_s = window_s
        self.max_in_window = max_in_window
        self.burst_s = burst_s
        self.burst_max = burst_max
        self.margin_s = margin_s  # the gateway sees a request a little after we send it
        # requests still counted, oldest first; `sent`: those of earlier processes
        self._sent: deque[Sent] = deque(sorted(sent, key=lambda s: s[0]))
        self._cache: dict[Hashable, tuple[float, Any]] = {}

    def _expire(self, now: float) -> None:
        while self._sent and now - self._sent[0][0] >= self.window_s + self.margin_s:
            self._sent.popleft()
        for key in [k for k, (at, _) in self._cache.items() if now - at >= self.identical_s]:
            del self._cache[key]

    def cached(self, key: Hashable) -> Any | None:
        """The answer to an identical request served within the identical-request window
        (IB would refuse to serve it again), or None."""
        self._expire(self.monotonic())
        hit = self._cache.get(key)
        return None if hit is None else hit[1]

    def wait_s(self, key: Hashable, contract: Hashable) -> float:
        """Seconds to wait before `key` may be sent (0: now)."""
        return self._waits(key, contract)[0]

    def why_wait(self, key: Hashable, contract: Hashable) -> str:
        """The rule that makes `key` wait longest, in words ('' when it may go now)."""
        return self._waits(key, contract)[1]

    def _waits(self, key: Hashable, contract: Hashable) -> tuple[float, str]:
        now = self.monotonic()
        self._expire(now)
        waits = [(0.0, "")]
        window = self.window_s + self.margin_s
        if len(self._sent) >= self.max_in_window:
            waits.append((self._sent[-self.max_in_window][0] + window - now, self.budget()))
        burst_s = self.burst_s + self.margin_s
        burst = [at for at, _, c in self._sent if c == contract and now - at < burst_s]
        if len(burst) >= self.burst_max:
            waits.append(
                (
                    burst[-self.burst_max] + burst_s - now,
                    f"{len(burst)} requests for this contract within {self.burst_s:g} s",
                )
            )
        identical_s = self.identical_s + self.margin_s
        same = [at for at, k, _ in self._sent if k == key and now - at < identical_s]
        if same:
            waits.append(
                (
                    same[-1] + identical_s - now,
                    f"an identical request {now - same[-1]:.0f} s ago (IB refuses one within "
                    f"{self.identical_s:g} s)",
                )
            )
        return max(waits, key=lambda w: w[0])

    def record_sent(self, key: Hashable, contract: Hashable) -> None:
        """Count a request as sent now (whatever its answer)."""
        self._sent.append((self.monotonic(), key, contract))

    def record_over(self, key: Hashable) -> None:
        """The request for `key` sent last is over (answered, refused or timed out): count it
        from now, the latest moment the gateway can have seen it. The client library may hold
        a request back before it goes out (ib_insync sends at most 45 messages a second), and
        a window counted from the send would then end before the gateway's does."""
        now = self.monotonic()
        for i in range(len(self._sent) - 1, -1, -1):
            at, k, contract = self._sent[i]
            if k == key:
                if i == len(self._sent) - 1:
                    self._sent[i] = (max(at, now), k, contract)
                else:  # keep the log oldest first
                    del self._sent[i]
                    self._sent.append((max(at, now), k, contract))
                return

    def record_answer(self, key: Hashable, answer: Any) -> None:
        """Remember a served answer for identical requests within the window."""
        self._cache[key] = (self.monotonic(), answer)

    @property
    def in_window(self) -> int:
        self._expire(self.monotonic())
        return len(self._sent)

    def sent(self) -> list[Sent]:
        """The requests still counted, oldest first (what a restarted process must know)."""
        self._expire(self.monotonic())
        return list(self._sent)

    def next_slot_s(self) -> float:
        """Seconds until the 10-minute window has room for one more request (0: now)."""
        now = self.monotonic()
        self._expire(now)
        if len(self._sent) < self.max_in_window:
            return 0.0
        return max(0.0, self._sent[-self.max_in_window][0] + self.window_s + self.margin_s - now)

    def budget(self) -> str:
        """The 10-minute budget in words: '58 of 60 requests used in the last 10 min', and
        when it is spent ', next slot in 312 s'."""
        used, window_min = self.in_window, self.window_s / 60
        text = f"{used} of {self.max_in_window} requests used in the last {window_min:g} min"
        wait = self.next_slot_s()
        return text + (f", next slot in {wait:.0f} s" if wait > 0 else "")


class LineBook:
    """Streaming subscriptions held, least recently used first, against a maximum number of
    market-data lines. `cap` may be lowered below the configured maximum when the broker
    says the lines are full (they are shared with every other session of the account)."""

    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines
        self.cap = max_lines
        self._used: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._used

    def __len__(self) -> int:
        return len(self._used)

    def keys(self) -> list[str]:
        return list(self._used)

    def touch(self, key: str, now: float) -> None:
        """Mark `key` used now (a new subscription or a read of its quote)."""
        self._used[key] = now
        self._used.move_to_end(key)

    def drop(self, key: str) -> None:
        self._used.pop(key, None)

    @property
    def full(self) -> bool:
        return len(self._used) >= self.cap

    def victim(self, keep: Collection[str]) -> str | None:
        """The least recently used subscription not in `keep` (held positions), or None."""
        return next((k for k in self._used if k not in keep), None)

    def lower_cap(self) -> None:
        """The broker refused a line (101): no more lines than are held now (at least 1)."""
        self.cap = max(1, min(self.cap, len(self._used)))

    def restore_cap(self) -> None:
        self.cap = self.max_lines
