"""Decision snapshots: one JSON document per cycle on disk, indexed (with its hash) in SQLite.

`save_snapshot` runs in the store's writer thread (file and index row together), so a slow or
full disk never blocks the event loop; a failed write is retried like any audit write.

A snapshot document says which format it is (`schema_version`; absent in the first format,
which `replay` cannot reproduce) and which configuration made it (`config_hash`); both are
copied to the index row (schema version 4 of the database; NULL in older rows).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from .db import stamped, utc_now
from .errors import DiscardOutput
from .redact import redact

__all__ = [
    "SNAPSHOT_SCHEMA_VERSION",
    "SnapshotError",
    "list_snapshots",
    "load_snapshot",
    "save_snapshot",
    "snapshots_between",
]

# The snapshot document's format. 1: no version field (before replay); 2: the stored config,
# its hash, and every input Decide and the gate read (`replay`). A new format increments this.
SNAPSHOT_SCHEMA_VERSION = 2


class SnapshotError(DiscardOutput):
    """A snapshot is missing or does not match its recorded hash."""


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@stamped
def save_snapshot(
    db: Database,
    data_dir: str | Path,
    cycle_id: int | None,
    document: dict[str, Any],
    summary: dict[str, Any] | None = None,
    at: str | None = None,
) -> int:
    """Write a cycle's decision snapshot (secrets redacted) and index it; return its id."""
    when = at or utc_now()
    body = json.dumps(redact(document), sort_keys=True, default=str, indent=1).encode()
    day = dt.datetime.fromisoformat(when).strftime("%Y%m%d")
    name = f"cycle-{cycle_id:08d}.json" if cycle_id is not None else f"adhoc-{when}.json"
    rel = Path("snapshots") / day / name
    _atomic_write(Path(data_dir) / rel, body)
    version = document.get("schema_version")
    config_hash = document.get("config_hash")
    cur = db.conn.execute(
        "INSERT INTO snapshots (cycle_id, at, path, sha256, size, summary, schema_version, "
        "config_hash) VALUES (?,?,?,?,?,?,?,?)",
        (
            cycle_id,
            when,
            str(rel),
            hashlib.sha256(body).hexdigest(),
            len(body),
            json.dumps(redact(summary or {}), default=str),
            version if isinstance(version, int) else None,
            config_hash if isinstance(config_hash, str) else None,
        ),
    )
    return int(cur.lastrowid or 0)


def load_snapshot(
    db: Database, data_dir: str | Path, snapshot_id: int | None = None, cycle_id: int | None = None
) -> dict[str, Any]:
    """Load a snapshot by id or by cycle, verifying its hash."""
    if snapshot_id is not None:
        rows = list(db.query("SELECT * FROM snapshots WHERE id = ?", [snapshot_id]))
    elif cycle_id is not None:
        rows = list(
            db.query(
                "SELECT * FROM snapshots WHERE cycle_id = ? ORDER BY id DESC LIMIT 1", [cycle_id]
            )
        )
    else:
        raise ValueError("give snapshot_id or cycle_id")
    if not rows:
        raise SnapshotError(
            f"no snapshot with id {snapshot_id}"
            if snapshot_id is not None
            else f"no snapshot for cycle {cycle_id}"
        )
    row = rows[0]
    path = Path(data_dir) / row["path"]
    plain = path.with_suffix("") if path.suffix == ".gz" else path
    body = None
    for candidate in (path, plain.with_name(plain.name + ".gz"), plain):  # compressed later?
        try:
            raw = candidate.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise SnapshotError(f"snapshot {row['id']} unreadable: {exc.strerror}") from None
        body = gzip.decompress(raw) if candidate.suffix == ".gz" else raw
        break
    if body is None:
        raise SnapshotError(f"snapshot {row['id']} unreadable: {row['path']} is gone (pruned?)")
    if hashlib.sha256(body).hexdigest() != row["sha256"]:
        raise SnapshotError(f"snapshot {row['id']} does not match its recorded hash")
    doc: dict[str, Any] = json.loads(body)
    return doc


def list_snapshots(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    """Return the newest snapshots' index rows, newest first."""
    return list(db.query("SELECT * FROM snapshots ORDER BY id DESC LIMIT ?", [limit]))


def snapshots_between(db: Database, start: str, end: str) -> list[dict[str, Any]]:
    """Return the index rows of the cycles' snapshots taken at or after `start` and before
    `end` (ISO times), the newest per cycle, oldest cycle first. Works on databases of every
    schema version (an older row has no `schema_version` or `config_hash`)."""
    return list(
        db.query(
            "SELECT * FROM snapshots WHERE id IN (SELECT MAX(id) FROM snapshots "
            "WHERE cycle_id IS NOT NULL AND at >= ? AND at < ? GROUP BY cycle_id) "
            "ORDER BY cycle_id",
            [start, end],
        )
    )
