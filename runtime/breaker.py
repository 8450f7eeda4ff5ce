"""The circuit breaker: ACTIVE / REDUCING / HALTED, latched across restarts of every process.

Trips only escalate (ACTIVE -> REDUCING -> HALTED) and are automatic; going back to ACTIVE is
`reset()`, which needs a person's name and a reason. The authoritative state is a small JSON
file written atomically under a file lock, so the watchdog can trip it even while SQLite is
busy; every transition is also recorded in SQLite (`breaker_state`, `breaker_history`),
best effort, retried on the next transition when the database was unavailable. An unreadable
state file reads as HALTED: fail closed.
"""

from __future__ import annotations

import datetime as dt
import enum
import fcntl
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlite_utils import Database

from data_lake import transaction

__all__ = ["BreakerState", "BreakerStatus", "CircuitBreaker", "ResetRefused"]

log = logging.getLogger("runtime.breaker")
STATE_FILE = "breaker.json"


class BreakerState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


_SEVERITY = {BreakerState.ACTIVE: 0, BreakerState.REDUCING: 1, BreakerState.HALTED: 2}


class ResetRefused(ValueError):
    """A reset without a person's name and reason."""


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    state: BreakerState
    since: str
    source: str
    reason: str
    generation: int
    actor: str = ""

    @property
    def allows_new_exposure(self) -> bool:
        return self.state is BreakerState.ACTIVE


def _utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class CircuitBreaker:
    """Read and change the breaker shared by the main loop, the watchdog and the CLI."""

    def __init__(
        self, data_dir: str | Path, db: Database | None = None, wall_clock: Callable[[], str] = _utc
    ) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / STATE_FILE
        self.db = db
        self.wall_clock = wall_clock
        self._unrecorded: list[tuple[BreakerStatus, BreakerStatus]] = []

    def status(self) -> BreakerStatus:
        """Return the current state, read from disk (another process may have changed it)."""
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

    def trip(self, to: BreakerState, source: str, reason: str) -> BreakerStatus:
        """Escalate to `to` (never de-escalates); return the resulting status."""
        if to is BreakerState.ACTIVE:
            raise ValueError("trip() cannot go to ACTIVE; a person uses reset()")
        with self._locked():
            old = self.status()
            if _SEVERITY[old.state] >= _SEVERITY[to] and old.generation >= 0:
                return old
            new = BreakerStatus(to, self.wall_clock(), source, reason, max(old.generation, 0) + 1)
            self._write(new)
        log.critical("circuit breaker %s -> %s by %s: %s", old.state, to, source, reason)
        self._record(old, new)
        return new

    def reset(self, by: str, reason: str) -> BreakerStatus:
        """Return to ACTIVE. Only a person does this: `by` and `reason` are required."""
        if not by.strip() or not reason.strip():
            raise ResetRefused("a breaker reset needs the person's name (--by) and a reason")
        with self._locked():
            old = self.status()
            new = BreakerStatus(
                BreakerState.ACTIVE,
                self.wall_clock(),
                "person",
                reason.strip(),
                max(old.generation, 0) + 1,
                actor=by.strip(),
            )
            self._write(new)
        log.warning("circuit breaker reset %s -> ACTIVE by %s: %s", old.state, by, reason)
        self._record(old, new)
        return new

    # --- internals -----------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / "breaker.lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _write(self, status: BreakerStatus) -> None:
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        data = json.dumps({**asdict(status), "state": status.state.value}).encode()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def flush_pending(self) -> int:
        """Retry writing transitions the database refused earlier; return how many remain."""
        if self._unrecorded and self.db is not None:
            self._write_records()
        return len(self._unrecorded)

    def _record(self, old: BreakerStatus, new: BreakerStatus) -> None:
        self._unrecorded.append((old, new))
        if self.db is not None:
            self._write_records()

    def _write_records(self) -> None:
        assert self.db is not None
        try:
            while self._unrecorded:
                before, after = self._unrecorded[0]
                with transaction(self.db) as conn:  # history and state together, or neither
                    self._insert(conn, before, after)
                self._unrecorded.pop(0)
        except sqlite3.Error as exc:
            log.error("breaker transition kept in memory, database unavailable: %s", exc)

    @staticmethod
    def _insert(conn: sqlite3.Connection, before: BreakerStatus, after: BreakerStatus) -> None:
        conn.execute(
            "INSERT INTO breaker_history (at, from_state, to_state, source, actor, reason, "
            "generation) VALUES (?,?,?,?,?,?,?)",
            (
                after.since,
                before.state.value,
                after.state.value,
                after.source,
                after.actor or None,
                after.reason,
                after.generation,
            ),
        )
        conn.execute(
            "INSERT INTO breaker_state (id, state, since, source, reason, generation) "
            "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
            "since = excluded.since, source = excluded.source, reason = excluded.reason, "
            "generation = excluded.generation WHERE excluded.generation >= "
            "breaker_state.generation",
            (after.state.value, after.since, after.source, after.reason, after.generation),
        )
