"""One daemon per data directory and account: exclusive locks taken before anything else.

`python -m runtime run` takes the data directory's `run` lock and the account's lock; a
standalone (or spawned) watchdog takes the data directory's `watchdog` lock. The locks are
`flock`s on files that hold the owner's PID; the kernel releases them when the process dies,
so a crash never leaves a stale lock. A second process is refused with the PID that holds the
lock, before it writes a record, opens the database or spawns anything.

The account lock lives in `[data] lock_dir` (default: the system's temp directory), keyed by
gateway host, port and account, so two data directories cannot trade the same account through
the same gateway from one machine. Under systemd with PrivateTmp each unit has its own temp
directory: set `lock_dir` to a shared path (e.g. /run/ib-swarm) when several units run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import tempfile
from pathlib import Path

from data_lake import RefuseToStart

__all__ = [
    "ANOTHER_WATCHDOG",
    "InstanceLock",
    "LockHeld",
    "account_lock_path",
    "acquire",
    "lock_holder",
    "role_lock_path",
]

# The exit code of a watchdog refused because another one already watches the data dir.
ANOTHER_WATCHDOG = 3


class LockHeld(RefuseToStart, RuntimeError):
    """Another process holds the lock (the message names it and its PID)."""


class InstanceLock:
    """A held lock; released by `release()` or when the process exits."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def role_lock_path(data_dir: Path, role: str) -> Path:
    """The data directory's lock for one role ("run", "watchdog")."""
    return data_dir / f"{role}.lock"


def lock_holder(path: Path) -> str:
    """The pid written in a lock file by its holder ("unknown" if it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text or "unknown"


def acquire(path: Path, what: str) -> InstanceLock:
    """Take the exclusive lock at `path` (creating its directory) or raise LockHeld."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
        writable = True
    except PermissionError:  # left by another user (root): a read-only descriptor locks too
        fd = os.open(path, os.O_RDONLY)
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockHeld(
            f"refused: {what} is already held by pid {lock_holder(path)} ({path}); "
            "one daemon per data directory and account"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    if writable:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
    return InstanceLock(path, fd)


def account_lock_path(lock_dir: str, host: str, port: int, account: str) -> Path:
    """The lock file for one account behind one gateway ('' account: the gateway's only one).
    The host is resolved, so 'localhost' and '127.0.0.1' are the same gateway; callers pass
    the account the gateway reports whenever they can learn it."""
    base = Path(lock_dir) if lock_dir else Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):  # unresolvable: its spelling is the best key there is
        host = socket.gethostbyname(host)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{host}-{port}-{account or 'default'}")
    return base / f"ib-swarm-account-{name}.lock"
