"""The SQLite file: the one place that sets pragmas, runs migrations and opens connections.

Writers open the file through `data_lake.store.Store` (one writer thread per process); readers
(the CLI, tests) open it read-only with `open_readonly`, which never creates a directory or a
database. WAL lets readers proceed while another process holds the write lock.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

import sqlite_utils

from .errors import RefuseToStart

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DB_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DataLakeMissing",
    "Database",
    "DatabaseError",
    "connect",
    "db_path",
    "migrate",
    "open_readonly",
    "stamped",
    "utc_now",
]

DB_FILENAME = "trading.sqlite3"
BUSY_TIMEOUT_MS = 1_000
_SCHEMA = Path(__file__).with_name("schema.sql")

Database = sqlite_utils.Database


DatabaseError = sqlite3.Error  # what a read on an `open_readonly` connection may raise


class DataLakeMissing(RefuseToStart, FileNotFoundError):
    """The data directory or its database does not exist (a reader never creates them)."""


def _statements(script: str) -> list[str]:
    """Split a SQL script into statements (executescript would commit our transaction)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(x.strip().startswith("--") for x in buf.splitlines() if x.strip()):
        raise ValueError("schema script ends with an incomplete statement")
    return out


def _v1(conn: sqlite3.Connection) -> None:
    for statement in _statements(_SCHEMA.read_text(encoding="utf-8")):
        conn.execute(statement)


# (version, migration). A new schema version appends here; shipped steps are never edited.
def _v2(conn: sqlite3.Connection) -> None:
    for statement in _statements(_SCHEMA.with_name("schema_v2.sql").read_text(encoding="utf-8")):
        conn.execute(statement)


def _v3(conn: sqlite3.Connection) -> None:
    for statement in _statements(_SCHEMA.with_name("schema_v3.sql").read_text(encoding="utf-8")):
        conn.execute(statement)


_ADD_COLUMN = re.compile(r"^ALTER TABLE (\w+) ADD COLUMN (\w+)", re.IGNORECASE | re.MULTILINE)


def _v4(conn: sqlite3.Connection) -> None:
    # idempotent: a file whose version number was set back keeps its columns
    for statement in _statements(_SCHEMA.with_name("schema_v4.sql").read_text(encoding="utf-8")):
        if (m := _ADD_COLUMN.search(statement)) is not None:
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({m.group(1)})")}
            if m.group(2) in have:
                continue
        conn.execute(statement)


def _v5(conn: sqlite3.Connection) -> None:
    # idempotent like _v4: a file whose version number was set back keeps its columns
    for statement in _statements(_SCHEMA.with_name("schema_v5.sql").read_text(encoding="utf-8")):
        if (m := _ADD_COLUMN.search(statement)) is not None:
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({m.group(1)})")}
            if m.group(2) in have:
                continue
        conn.execute(statement)


MIGRATIONS: tuple[tuple[int, Callable[[sqlite3.Connection], None]], ...] = (
    (1, _v1),
    (2, _v2),
    (3, _v3),
    (4, _v4),
    (5, _v5),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def utc_now() -> str:
    """Return the current UTC time as ISO 8601 (the only wall-clock read in the data lake)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def db_path(data_dir: str | Path) -> Path:
    """Return the database file's path inside a data directory."""
    return Path(data_dir) / DB_FILENAME


def connect(path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """Open a read-write connection with the project's pragmas (WAL, FULL sync, FKs)."""
    conn = sqlite3.connect(
        str(path), timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot enable WAL (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the file's user_version; return the version."""
    with _immediate(conn):
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this code "
                f"({SCHEMA_VERSION}); refusing to run an older program on it"
            )
        for version, step in MIGRATIONS:
            if version > current:
                step(conn)
                conn.execute(f"PRAGMA user_version = {version}")
                current = version
    return int(current)


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_readonly(
    data_dir: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> sqlite_utils.Database:
    """Open the database read-only (`mode=ro`). Never creates the directory or the file:
    a missing one raises DataLakeMissing."""
    directory = Path(data_dir)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise DataLakeMissing(f"data directory {directory} {what}")
    path = directory / DB_FILENAME
    if not path.is_file():
        raise DataLakeMissing(f"no database in {directory} (expected {DB_FILENAME})")
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return sqlite_utils.Database(conn)


def stamped(fn: Callable[P, T]) -> Callable[P, T]:
    """Mark a repository function whose `at` argument is the event's time: `post` fills it in
    when the event happens, not when the (possibly delayed) write runs."""
    fn.stamped = True  # type: ignore[attr-defined]
    return fn
