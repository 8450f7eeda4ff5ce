"""One writer per process: a thread that owns the read-write connection, and a reader thread.

Nothing here runs SQL on the caller's thread, so a database locked by another process (or a
full disk) never blocks an event loop. Three ways in:

- `post(fn, ...)`: an audit write (event, fill, status). Queued in order and retried until it
  is written: a lock or a full disk delays it, never drops it. The queue is bounded; when it
  overflows, the overflow is counted, logged at CRITICAL and recorded as a safety event as soon
  as the database takes writes again.
- `await run(fn, ..., timeout=)`: a write the caller must see done (an order intent before the
  order is sent). One attempt, in queue order; on timeout a job that has not started is
  cancelled, and the caller gets StorageUnavailable.
- `await read(fn, ..., timeout=)`: a read on a separate read-only connection (WAL readers are
  not blocked by another process's write lock).

`fn` is a repository function from this package taking a `sqlite_utils.Database` first. Every
write job runs inside BEGIN IMMEDIATE ... COMMIT, so a job is atomic.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from .db import BUSY_TIMEOUT_MS, DB_FILENAME, connect, migrate, utc_now
from .errors import RetryLater
from .trail import log_safety_event

__all__ = ["StorageUnavailable", "Store"]

log = logging.getLogger("data_lake.store")

T = TypeVar("T")

MAX_QUEUE = 100_000
_RETRY_MIN_S = 0.05
_RETRY_MAX_S = 1.0


class StorageUnavailable(RetryLater):
    """A write or read the caller awaited did not happen (locked, full, closed, timed out)."""


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    retry: bool
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)

    def describe(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def _transient(exc: BaseException) -> bool:
    """Locked, busy, full, read-only, I/O: may succeed later. Constraint and programming errors
    will not."""
    return isinstance(exc, (sqlite3.OperationalError, OSError))


class Store:
    """The data lake of one process. Open with `Store.open(data_dir)`; close with `close()`."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        max_queue: int = MAX_QUEUE,
        name: str = "store",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        self.busy_timeout_ms = busy_timeout_ms
        self.max_queue = max_queue
        self.name = name
        self._jobs: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._abandon = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._writer, name=f"{name}-writer", daemon=True)
        self._dead = False  # the writer thread ended: nothing more can be written
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"{name}-read")
        self._reader_local = threading.local()
        self.dropped = 0
        self._dropped_unrecorded = 0
        self.last_error: str | None = None
        self.failing = False
        self.on_recovered: list[Callable[[], None]] = []

    # --- lifecycle -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        open_timeout_s: float | None = 30.0,
        name: str = "store",
    ) -> Store:
        """Create the directory if needed, open and migrate the database in the writer
        thread; raise StorageUnavailable when that does not succeed within open_timeout_s.
        With open_timeout_s=None, return at once: writes queue until the database opens
        (the watchdog must start even while another process holds the lock)."""
        store = cls(data_dir, busy_timeout_ms=busy_timeout_ms, name=name)
        store.data_dir.mkdir(parents=True, exist_ok=True)
        store._thread.start()
        if open_timeout_s is None:
            return store
        try:
            store._ready.result(open_timeout_s)
        except concurrent.futures.TimeoutError:
            store._abandon.set()
            store._stop_thread()
            raise StorageUnavailable(
                f"{store.path}: could not open the database within {open_timeout_s:g}s "
                f"(last error: {store.last_error or 'none'})"
            ) from None
        except Exception as exc:
            store._stop_thread()
            raise StorageUnavailable(f"{store.path}: {exc}") from None
        return store

    def close(self, timeout: float = 5.0) -> int:
        """Write what is queued (up to `timeout`), then stop; return how many writes were
        abandoned (logged at CRITICAL, never silently)."""
        if not self._thread.is_alive():
            return len(self._jobs)
        self.flush(timeout)
        self._abandon.set()
        left = self._stop_thread()
        self._reader.shutdown(wait=False, cancel_futures=True)
        return left

    def _stop_thread(self) -> int:
        with self._cond:
            self._stopping = True
            left = len(self._jobs)
            self._cond.notify_all()
        self._thread.join(10)
        if left:
            log.critical(
                "%s: %d queued writes abandoned at close (database unavailable: %s)",
                self.name,
                left,
                self.last_error,
            )
        return left

    def flush(self, timeout: float) -> bool:
        """Wait until every queued write is done; True when the queue drained in time."""
        return self._idle.wait(timeout)

    @property
    def backlog(self) -> int:
        """Writes queued and not yet done."""
        return len(self._jobs)

    # --- the three ways in ---------------------------------------------------------------
    def post(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Queue an audit write; it is retried until written. Never raises, never blocks."""
        if getattr(fn, "stamped", False):
            kwargs.setdefault("at", utc_now())
        with self._cond:
            if self._stopping or self._dead:
                log.critical("%s: write %s after close: not stored", self.name, fn.__name__)
                return
            if len(self._jobs) >= self.max_queue:
                self.dropped += 1
                self._dropped_unrecorded += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.critical(
                        "%s: write queue full (%d): %d audit writes dropped so far",
                        self.name,
                        self.max_queue,
                        self.dropped,
                    )
                return
            self._jobs.append(_Job(fn, args, kwargs, retry=True))
            self._idle.clear()
            self._cond.notify()

    async def run(self, fn: Callable[..., T], /, *args: Any, timeout: float, **kwargs: Any) -> T:
        """Write and wait for the result (one attempt); StorageUnavailable on any failure."""
        future = self._submit(fn, args, kwargs)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            future.cancel()
            raise StorageUnavailable(
                f"{fn.__name__} not done within {timeout:g}s "
                f"(database: {self.last_error or 'busy'})"
            ) from None

    def call(self, fn: Callable[..., T], /, *args: Any, timeout: float, **kwargs: Any) -> T:
        """The blocking form of `run`, for threads that have no event loop (the CLI)."""
        future: concurrent.futures.Future[T] = self._submit(fn, args, kwargs)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StorageUnavailable(
                f"{fn.__name__} not done within {timeout:g}s "
                f"(database: {self.last_error or 'busy'})"
            ) from None

    async def read(self, fn: Callable[..., T], /, *args: Any, timeout: float, **kwargs: Any) -> T:
        """Run a read on the reader thread's read-only connection."""
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._reader, lambda: self._read(fn, args, kwargs))
        except RuntimeError as exc:  # executor shut down
            raise StorageUnavailable(f"{fn.__name__}: store closed") from exc
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise StorageUnavailable(
                f"read {fn.__name__} not done within {timeout:g}s (database busy)"
            ) from None
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"read {fn.__name__}: {exc}") from None

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[Any]:
        job = _Job(fn, args, kwargs, retry=False)
        with self._cond:
            if self._stopping or self._dead:
                job.future.set_exception(StorageUnavailable(f"{fn.__name__}: store closed"))
                return job.future
            self._jobs.append(job)
            self._idle.clear()
            self._cond.notify()
        return job.future

    # --- the threads ---------------------------------------------------------------------
    def _read(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        db: sqlite_utils.Database | None = getattr(self._reader_local, "db", None)
        if db is None:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=self.busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            db = sqlite_utils.Database(conn)
            self._reader_local.db = db
        return fn(db, *args, **kwargs)

    def _open(self) -> sqlite_utils.Database | None:
        delay = _RETRY_MIN_S
        while not self._abandon.is_set():
            try:
                conn = connect(self.path, self.busy_timeout_ms)
                try:
                    migrate(conn)
                except BaseException:
                    conn.close()
                    raise
                return sqlite_utils.Database(conn)
            except (sqlite3.OperationalError, OSError) as exc:
                self.last_error = str(exc)
                self._abandon.wait(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
            except Exception as exc:  # newer schema, corrupt file: not transient
                if not self._ready.done():
                    self._ready.set_exception(exc)
                return None
        return None

    def _writer(self) -> None:
        db = self._open()
        if db is None:
            self._fail_all("database could not be opened")
            return
        self._ready.set_result(None)
        try:
            while True:
                with self._cond:
                    while not self._jobs and not self._stopping:
                        self._idle.set()
                        self._cond.wait()
                    if not self._jobs:
                        self._idle.set()
                        return
                    job = self._jobs[0]
                if job.future.set_running_or_notify_cancel():
                    db = self._execute(db, job)
                with self._cond:
                    if self._jobs and self._jobs[0] is job:
                        self._jobs.popleft()
                if self._abandon.is_set() and self._stopping:
                    self._fail_all("store closed")
                    return
        finally:
            db.conn.close()

    def _execute(self, db: sqlite_utils.Database, job: _Job) -> sqlite_utils.Database:
        delay = _RETRY_MIN_S
        failures = 0
        while True:
            try:
                result = self._transaction(db, job)
            except Exception as exc:
                failures += 1
                self._failed(exc, job)
                if not (job.retry and _transient(exc)) or self._abandon.is_set():
                    if job.retry:
                        log.error("%s: write %s lost: %s", self.name, job.describe(), exc)
                    job.future.set_exception(StorageUnavailable(f"{job.describe()}: {exc}"))
                    return db
                if failures % 20 == 0:  # a connection that saw I/O errors may need reopening
                    db = self._reopen(db)
                self._abandon.wait(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            job.future.set_result(result)
            if self.failing or self._dropped_unrecorded:
                self._recovered(db)
            return db

    @staticmethod
    def _transaction(db: sqlite_utils.Database, job: _Job) -> Any:
        conn = db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = job.fn(db, *job.args, **job.kwargs)
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _reopen(self, db: sqlite_utils.Database) -> sqlite_utils.Database:
        try:
            conn = connect(self.path, self.busy_timeout_ms)
        except (sqlite3.Error, OSError):
            return db
        db.conn.close()
        return sqlite_utils.Database(conn)

    def _failed(self, exc: BaseException, job: _Job) -> None:
        first = not self.failing
        self.failing = True
        self.last_error = f"{type(exc).__name__}: {exc}"
        if first:
            log.error(
                "%s: database write failed (%s); %d writes queued, retrying",
                self.name,
                self.last_error,
                len(self._jobs),
            )

    def _recovered(self, db: sqlite_utils.Database) -> None:
        if self.failing:
            self.failing = False
            log.warning("%s: database writable again; %d writes queued", self.name, len(self._jobs))
            for callback in list(self.on_recovered):
                try:
                    callback()
                except Exception:
                    log.exception("%s: on_recovered callback failed", self.name)
        if self._dropped_unrecorded:
            n, self._dropped_unrecorded = self._dropped_unrecorded, 0
            try:
                self._transaction(
                    db,
                    _Job(
                        log_safety_event,
                        (self.name, "audit_overflow"),
                        {
                            "reason": f"write queue overflowed: {n} audit writes were dropped",
                            "severity": "critical",
                        },
                        retry=False,
                    ),
                )
            except Exception as exc:
                self._dropped_unrecorded += n
                log.critical("%s: overflow record not stored: %s", self.name, exc)

    def _fail_all(self, why: str) -> None:
        with self._cond:
            self._dead = True
            jobs = list(self._jobs)
            self._jobs.clear()
            self._idle.set()
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(StorageUnavailable(f"{job.describe()}: {why}"))
        if jobs:
            log.critical("%s: %d queued writes not stored: %s", self.name, len(jobs), why)
