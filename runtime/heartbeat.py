"""Heartbeat files (atomic JSON) and systemd notifications (sd_notify over a Unix socket).

A heartbeat is `{pid, wall_ts, mono_ts, cycle, phase}`, written to a temp file, fsync'd and
renamed over the old one. Staleness is judged on the monotonic clock (system-wide on Linux),
so wall-clock jumps cause no false trips. An unreadable heartbeat counts as stale.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "MAIN_HEARTBEAT",
    "WATCHDOG_HEARTBEAT",
    "Clock",
    "Heartbeat",
    "SystemClock",
    "read_heartbeat",
    "sd_notify",
    "write_heartbeat",
]

log = logging.getLogger("runtime.heartbeat")
MAIN_HEARTBEAT = "heartbeat-main.json"  # in the data directory
WATCHDOG_HEARTBEAT = "heartbeat-watchdog.json"


class Clock:
    """Injected time: monotonic seconds for durations, wall seconds for records."""

    def monotonic(self) -> float:
        raise NotImplementedError

    def wall(self) -> float:
        raise NotImplementedError


class SystemClock(Clock):
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pid: int
    wall_ts: float
    mono_ts: float
    cycle: int
    phase: str

    def age(self, now_mono: float) -> float:
        return now_mono - self.mono_ts


def write_heartbeat(
    path: Path, clock: Clock, cycle: int, phase: str, pid: int | None = None
) -> Heartbeat:
    """Atomically replace the heartbeat file; return what was written."""
    hb = Heartbeat(pid or os.getpid(), clock.wall(), clock.monotonic(), cycle, phase)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(hb), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hb


def read_heartbeat(path: Path) -> Heartbeat | None:
    """Return the heartbeat, or None when it is missing, half-written or malformed."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Heartbeat(
            int(raw["pid"]),
            float(raw["wall_ts"]),
            float(raw["mono_ts"]),
            int(raw["cycle"]),
            str(raw["phase"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sd_notify(
    message: str,
    env: dict[str, str] | None = None,
    sender: Callable[[bytes, str], None] | None = None,
) -> bool:
    """Send a systemd notification (READY=1, WATCHDOG=1, STOPPING=1) if NOTIFY_SOCKET is set."""
    addr = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        if sender is not None:
            sender(message.encode(), addr)
        else:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(addr)
                s.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify(%s) failed: %s", message, exc)
        return False
