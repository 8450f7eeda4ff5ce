"""Keeping the data lake to a size: online backups, and pruning or compressing old snapshots.

A backup uses SQLite's online backup API from a read-only connection: the daemon keeps
writing while it runs, and the copy is a consistent database (checked before it is kept).
Snapshots older than a cutoff are deleted with their index rows; older than another cutoff
they are gzip-compressed in place (the recorded hash stays the hash of the JSON, so
`load_snapshot` verifies a compressed one as before).
"""

from __future__ import annotations

import gzip
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from .db import db_path, utc_now

__all__ = ["backup_database", "compress_snapshots", "prune_snapshots"]


def _is_dir_target(dest: Path | str) -> bool:
    """A destination written with a trailing separator ("/backups/ib-swarm/") names a
    directory, existing or not; so does an existing directory."""
    text = os.fspath(dest)
    seps = tuple(sep for sep in (os.sep, os.altsep) if sep)
    return text.endswith(seps) or Path(text).is_dir()


def _dated_name(folder: Path) -> Path:
    """trading-<UTC time>.sqlite3 in `folder`; -2, -3, ... when a backup of the same second
    is there already (the name is ours to choose: a folder target never says "exists")."""
    stamp = utc_now()[:19].replace(":", "").replace("-", "")
    dest = folder / f"trading-{stamp}.sqlite3"
    n = 1
    while dest.exists():
        n += 1
        dest = folder / f"trading-{stamp}-{n}.sqlite3"
    return dest


def backup_database(
    data_dir: Path, dest: Path | str, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Copy the live database to `dest` with the online backup API; verify the copy
    (integrity_check); return its path. `dest` is a new file, or a directory (an existing one,
    or any path ending in a separator: created with its parents) to put a dated file in."""
    source_path = db_path(data_dir)
    if not source_path.is_file():
        raise FileNotFoundError(f"no database at {source_path}")
    as_dir = _is_dir_target(dest)
    dest = Path(dest)
    if as_dir:
        if dest.exists() and not dest.is_dir():
            raise FileExistsError(f"backup destination {dest}/ is a folder, but {dest} is a file")
        dest.mkdir(parents=True, exist_ok=True)
        dest = _dated_name(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists: choose a new name")
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"backup destination folder {dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.name}.partial")
    src = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    dst = sqlite3.connect(str(tmp))
    try:
        src.backup(
            dst,
            pages=256,
            progress=(lambda status, remaining, total: progress(total - remaining, total))
            if progress
            else None,
        )
        dst.execute("PRAGMA journal_mode = DELETE")  # a self-contained file, no -wal beside it
        ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise sqlite3.DatabaseError(f"backup failed its integrity check: {ok}")
    except BaseException:
        dst.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    dst.close()
    os.replace(tmp, dest)
    return dest


def _old_snapshots(db: Database, cutoff: str) -> list[dict[str, Any]]:
    return list(db.query("SELECT id, path, at FROM snapshots WHERE at < ? ORDER BY id", [cutoff]))


def prune_snapshots(
    db: Database, data_dir: Path, cutoff: str, dry_run: bool = False
) -> tuple[int, int]:
    """Delete snapshots recorded before `cutoff` (ISO time): files and index rows. Return
    (how many, bytes freed)."""
    rows = _old_snapshots(db, cutoff)
    freed = 0
    for row in rows:
        path = Path(data_dir) / row["path"]
        try:
            freed += path.stat().st_size
            if not dry_run:
                path.unlink()
        except FileNotFoundError:
            pass
    if not dry_run and rows:
        db.conn.execute("DELETE FROM snapshots WHERE at < ?", [cutoff])
    return len(rows), freed


def compress_snapshots(
    db: Database, data_dir: Path, cutoff: str, dry_run: bool = False
) -> tuple[int, int]:
    """Gzip the snapshots recorded before `cutoff` that are not compressed yet. Return
    (how many, bytes saved)."""
    saved = 0
    count = 0
    for row in _old_snapshots(db, cutoff):
        if row["path"].endswith(".gz"):
            continue
        path = Path(data_dir) / row["path"]
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            continue
        packed = gzip.compress(body, compresslevel=6, mtime=0)
        count += 1
        saved += len(body) - len(packed)
        if dry_run:
            continue
        target = path.with_name(path.name + ".gz")
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(packed)
        os.replace(tmp, target)
        db.conn.execute(
            "UPDATE snapshots SET path = ? WHERE id = ?", [row["path"] + ".gz", row["id"]]
        )
        path.unlink()
    return count, saved
