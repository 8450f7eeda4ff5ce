"""The historical pacer's request log, kept in the data directory across restarts.

IB counts historical-data requests per account over 10 minutes, whichever process sent them.
A restarted daemon whose pacer started empty spent the budget again and ran into 162 pacing
violations for minutes; with this log it starts knowing what earlier processes spent.

The log is a small JSON file (`history-pacing.json`: at most the requests of the last 10
minutes, about 60), replaced atomically when a request is sent and when it is over: written to
a temp file, fsync'd and renamed, like the heartbeats (a few hundred bytes to a few KB, at most
twice per historical request). Not the SQLite lake: the lake's writes are queued (a locked
database delays them), so a restart could read the log before the last requests reached it;
the log is not an audit record (nothing in it matters after 10 minutes, it needs no schema,
migration or retention); and only `data_lake` talks to SQLite.

Times are the pacer's injected monotonic clock (system-wide on Linux, so a restarted process
on the same boot reads them as they are). The file also records both clocks at the save; a
reader trusts the smaller elapsed time the two clocks agree on (after a reboot the monotonic
clock starts again, after a wall-clock step the wall clock lies), so an entry is never taken
for older than it is: the pacer rather waits too long than draws a 162.

A missing file is an empty log; an unreadable or malformed one is logged (warning) and the
pacer starts empty, as before: the daemon never stops for it. A failed write is logged.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from .pacing import Sent

__all__ = ["PACING_LOG", "HistoryLog"]

log = logging.getLogger("runtime.pacing_log")

PACING_LOG = "history-pacing.json"  # in the data directory
VERSION = 1


class HistoryLog:
    """Load and save the historical pacer's requests at `path` (see the module's docstring).
    `monotonic` is the pacer's clock; `wall` the injected wall clock."""

    def __init__(
        self,
        path: Path,
        monotonic: Callable[[], float],
        wall: Callable[[], float],
        *,
        keep_s: float = 600.5,  # HistoryPacer's window_s + margin_s
    ) -> None:
        self.path = path
        self.monotonic = monotonic
        self.wall = wall
        self.keep_s = keep_s  # entries older than this no longer count (the pacer's window)
        self._save_failed = False

    def load(self) -> list[Sent]:
        """The requests earlier processes sent within `keep_s`, on this process's monotonic
        clock, oldest first; [] when there is no log or it cannot be read (logged)."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("history pacing log %s unreadable (%s); starting empty", self.path, exc)
            return []
        try:
            sent = self._parse(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "history pacing log %s malformed (%s); starting empty: historical requests of "
                "an earlier process in IB's 10-minute window are not counted",
                self.path,
                str(exc) or type(exc).__name__,
            )
            return []
        if sent:
            log.info(
                "history pacing: %d requests of the last %.0f s carried over from an earlier "
                "process (%s)",
                len(sent),
                self.keep_s,
                self.path.name,
            )
        return sent

    def _parse(self, doc: Any) -> list[Sent]:
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {VERSION}")
        saved_mono, saved_wall = _finite(doc["saved_mono"]), _finite(doc["saved_wall"])
        now_mono, now_wall = self.monotonic(), self.wall()
        # the smaller elapsed time both clocks agree on (a negative one cannot be trusted)
        candidates = [e for e in (now_mono - saved_mono, now_wall - saved_wall) if e >= 0]
        elapsed = min(candidates, default=0.0)
        out: list[Sent] = []
        for entry in doc["sent"]:
            at, key, contract = entry["at"], _hashable(entry["key"]), _hashable(entry["contract"])
            age = elapsed + max(0.0, saved_mono - _finite(at))
            if age < self.keep_s:
                out.append((now_mono - age, key, contract))
        out.sort(key=lambda s: s[0])
        return out

    def save(self, sent: Iterable[Sent]) -> None:
        """Replace the log with `sent` (atomically). A failure is logged, never raised: the
        request goes on, and a restart would start with less than IB counts."""
        doc = {
            "version": VERSION,
            "saved_mono": self.monotonic(),
            "saved_wall": self.wall(),
            "sent": [{"at": at, "key": key, "contract": c} for at, key, c in sent],
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except (OSError, TypeError, ValueError) as exc:
            if not self._save_failed:  # once per streak of failures, not once per request
                log.warning("history pacing log %s not written: %s", self.path, exc)
            self._save_failed = True
            return
        if self._save_failed:
            log.info("history pacing log %s written again", self.path)
        self._save_failed = False


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite time: {value!r}")
    return number


def _hashable(value: Any) -> Hashable:
    """A key as the broker built it: JSON turned its tuples into lists."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"not a request key part: {value!r}")
