"""The SQLite file: WAL, busy timeout, forward migrations, explicit IMMEDIATE transactions.

The main loop, the watchdog and the CLI open the same file at once. Connections run in
autocommit mode; every multi-statement write goes through `transaction()`, which takes the
write lock up front (BEGIN IMMEDIATE) so a read that leads to a write never deadlocks.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

__all__ = [
    "DB_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Database",
    "open_db",
    "transaction",
    "utc_now",
]

DB_FILENAME = "trading.sqlite3"
BUSY_TIMEOUT_MS = 15_000
_SCHEMA = Path(__file__).with_name("schema.sql")

Database = sqlite_utils.Database


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
MIGRATIONS: tuple[tuple[int, Callable[[sqlite3.Connection], None]], ...] = ((1, _v1),)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def utc_now() -> str:
    """Return the current UTC time as ISO 8601 (the only wall-clock read in the data lake)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise sqlite3.OperationalError(f"{path}: cannot enable WAL (journal_mode={mode})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
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
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_db(data_dir: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite_utils.Database:
    """Open (creating and migrating if needed) the trading database in `data_dir`.

    `busy_timeout_ms` is how long a write waits for another writer; the watchdog uses a short
    one so that a busy database delays its records, never its event loop."""
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    conn = _connect(directory / DB_FILENAME, busy_timeout_ms)
    migrate(conn)
    return sqlite_utils.Database(conn)


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """Run a block atomically with the write lock held from the start (BEGIN IMMEDIATE)."""
    with _immediate(db.conn) as conn:
        yield conn
