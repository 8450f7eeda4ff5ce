"""A command run as root never leaves files the service user cannot write.

The service runs as its own user (e.g. `ibswarm`) and owns its data directory. An operator
who runs a CLI command as root (`breaker reset`, `panic`, `backup`) would otherwise leave
root-owned files there (the database on first use, snapshot folders, state files) and the
service would fail on its next write. SQLite already hands its -wal/-shm files to the
database's owner when it runs as root; `hand_back` does the same for everything else when
the command ends.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["hand_back"]

log = logging.getLogger("runtime.ownership")


def hand_back(data_dir: Path, max_files: int = 100_000) -> int:
    """If running as root and the data directory belongs to another user, give that user
    every root-owned file and folder inside it; return how many were changed."""
    if os.geteuid() != 0:
        return 0
    try:
        top = data_dir.stat()
    except OSError:
        return 0
    if top.st_uid == 0:
        return 0
    changed = 0
    seen = 0
    for root, dirs, files in os.walk(data_dir):
        for name in [*dirs, *files]:
            seen += 1
            if seen > max_files:
                return changed
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
                if st.st_uid == 0:
                    os.lchown(path, top.st_uid, top.st_gid)
                    changed += 1
            except OSError as exc:
                log.warning("could not hand %s back to uid %s: %s", path, top.st_uid, exc)
    return changed
