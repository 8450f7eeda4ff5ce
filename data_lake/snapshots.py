"""Decision snapshots: one JSON document per cycle on disk, indexed (with its hash) in SQLite.

`save_snapshot` runs in the store's writer thread (file and index row together), so a slow or
full disk never blocks the event loop; a failed write is retried like any audit write.
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

__all__ = ["SnapshotError", "list_snapshots", "load_snapshot", "save_snapshot"]


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
    cur = db.conn.execute(
        "INSERT INTO snapshots (cycle_id, at, path, sha256, size, summary) VALUES (?,?,?,?,?,?)",
        (
            cycle_id,
            when,
            str(rel),
            hashlib.sha256(body).hexdigest(),
            len(body),
            json.dumps(redact(summary or {}), default=str),
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
