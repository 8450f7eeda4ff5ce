"""The circuit breaker: ACTIVE / REDUCING / HALTED, latched across restarts of every process.

Trips only escalate (ACTIVE -> REDUCING -> HALTED) and are automatic; going back to ACTIVE is
`reset()`, which needs a person's name and a reason. The authoritative state is a small JSON
file written atomically under a lock on the data directory itself (no lock file another user
could own), so the watchdog can trip it even while SQLite is busy; every transition is also
queued to SQLite (`breaker_state`, `breaker_history`) through the process's store. An
unreadable state file reads as HALTED: fail closed.

A trip that cannot be written (disk full, permission denied) still takes effect: it is latched
in this process's memory, `status()` reports it, the caller goes on to cancel and flatten, and
every later `status()` call tries to persist it again.
"""

from __future__ import annotations

import datetime as dt
import enum
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from data_lake import HaltAndAlert, RefuseToStart, Store, record_breaker_transition

__all__ = [
    "BreakerState",
    "BreakerStatus",
    "BreakerUnwritable",
    "CircuitBreaker",
    "ResetRefused",
    "who_changed",
]

log = logging.getLogger("runtime.breaker")
STATE_FILE = "breaker.json"


class BreakerState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


_SEVERITY = {BreakerState.ACTIVE: 0, BreakerState.REDUCING: 1, BreakerState.HALTED: 2}


class ResetRefused(RefuseToStart, ValueError):
    """A reset without a person's name and reason."""


class BreakerUnwritable(HaltAndAlert, OSError):
    """The breaker file could not be written (a reset is refused rather than half-done)."""


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    state: BreakerState
    since: str
    source: str
    reason: str
    generation: int
    actor: str = ""
    persisted: bool = True

    @property
    def allows_new_exposure(self) -> bool:
        return self.state is BreakerState.ACTIVE


def who_changed(source: str, actor: str | None) -> str:
    """Who changed the breaker, for people: its source and, where it names someone else, its
    actor ('person (dana)', 'watchdog')."""
    return f"{source} ({actor})" if actor and actor != source else source


def _utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class CircuitBreaker:
    """Read and change the breaker shared by the main loop, the watchdog and the CLI."""

    def __init__(
        self,
        data_dir: str | Path,
        store: Store | None = None,
        wall_clock: Callable[[], str] = _utc,
    ) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / STATE_FILE
        self.store = store
        self.wall_clock = wall_clock
        self._latched: BreakerStatus | None = None  # a trip not yet written to the file

    def status(self) -> BreakerStatus:
        """Return the current state, read from disk (another process may have changed it),
        or this process's unpersisted trip when it is more severe."""
        on_disk = self._read()
        latched = self._latched
        if latched is None:
            return on_disk
        if _SEVERITY[on_disk.state] >= _SEVERITY[latched.state] and on_disk.generation >= 0:
            self._latched = None  # someone persisted an equal or stronger state
            return on_disk
        try:
            with self._locked():
                self._write(latched)
            self._latched = None
            log.critical("breaker trip persisted late: %s (%s)", latched.state, latched.reason)
            return BreakerStatus(**{**asdict(latched), "persisted": True})
        except OSError:
            return latched

    def _read(self) -> BreakerStatus:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return BreakerStatus(
                BreakerState(raw["state"]),
                raw["since"],
                raw["source"],
                raw["reason"],
                int(raw["generation"]),
                raw.get("actor", ""),
            )
        except FileNotFoundError:
            return BreakerStatus(BreakerState.ACTIVE, "", "init", "never tripped", 0)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return BreakerStatus(
                BreakerState.HALTED,
                self.wall_clock(),
                "breaker",
                f"breaker state file unreadable ({exc}); failing closed",
                -1,
            )

    def trip(self, to: BreakerState, source: str, reason: str, *, actor: str = "") -> BreakerStatus:
        """Escalate to `to` (never de-escalates); return the resulting status. Never raises
        for an unwritable file: the trip is latched in memory and reported loudly. `actor`
        names who tripped it: the person (`breaker trip --by`, `panic --by`), or the process
        ("watchdog", "main_loop"), as a reset names its person."""
        if to is BreakerState.ACTIVE:
            raise ValueError("trip() cannot go to ACTIVE; a person uses reset()")
        old = self.status()  # may persist an earlier unwritten trip (takes the lock itself)
        if _SEVERITY[old.state] >= _SEVERITY[to] and old.generation >= 0:
            return old
        try:
            with self._locked():
                old = self._read()
                if _SEVERITY[old.state] >= _SEVERITY[to] and old.generation >= 0:
                    return old
                new = BreakerStatus(
                    to,
                    self.wall_clock(),
                    source,
                    reason,
                    max(old.generation, 0) + 1,
                    actor=actor.strip(),
                )
                self._write(new)
        except OSError as exc:
            new = BreakerStatus(
                to,
                self.wall_clock(),
                source,
                reason,
                max(old.generation, 0) + 1,
                actor=actor.strip(),
                persisted=False,
            )
            self._latched = new
            log.critical(
                "circuit breaker %s -> %s by %s: %s -- NOT PERSISTED (%s); latched in memory, "
                "cancelling and flattening anyway, retrying the write",
                old.state,
                to,
                source,
                reason,
                exc,
            )
            self._record(old, new)
            return new
        self._latched = None
        log.critical("circuit breaker %s -> %s by %s: %s", old.state, to, source, reason)
        self._record(old, new)
        return new

    def reset(self, by: str, reason: str) -> BreakerStatus:
        """Return to ACTIVE. Only a person does this: `by` and `reason` are required."""
        if not by.strip() or not reason.strip():
            raise ResetRefused("a breaker reset needs the person's name (--by) and a reason")
        try:
            with self._locked():
                old = self._read()
                new = BreakerStatus(
                    BreakerState.ACTIVE,
                    self.wall_clock(),
                    "person",
                    reason.strip(),
                    max(old.generation, 0) + 1,
                    actor=by.strip(),
                )
                self._write(new)
        except OSError as exc:
            raise BreakerUnwritable(
                f"breaker file {self.path} could not be written ({exc.strerror or exc}): "
                "the breaker was NOT reset"
            ) from None
        self._latched = None
        log.warning("circuit breaker reset %s -> ACTIVE by %s: %s", old.state, by, reason)
        self._record(old, new)
        return new

    # --- internals -----------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _write(self, status: BreakerStatus) -> None:
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        data = asdict(status)
        data.pop("persisted")
        body = json.dumps({**data, "state": status.state.value}).encode()
        try:
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _record(self, old: BreakerStatus, new: BreakerStatus) -> None:
        if self.store is None:
            return
        self.store.post(
            record_breaker_transition,
            at=new.since,
            from_state=old.state.value,
            to_state=new.state.value,
            source=new.source,
            actor=new.actor or None,
            reason=new.reason,
            generation=new.generation,
        )
