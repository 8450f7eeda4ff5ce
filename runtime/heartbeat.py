"""Heartbeat files (atomic JSON) and systemd notifications (sd_notify over a Unix socket).

A heartbeat is `{pid, wall_ts, mono_ts, cycle, phase}` plus who wrote it and, for the
watchdog, what its broker session is doing:

- `create_time` / `boot_time`: the writer's process start time (psutil `create_time()`) and
  the boot time it was computed against, so a reader can tell the writer from another process
  that reused its pid (compared boot-relative: immune to wall-clock steps);
- `session`: the watchdog's broker session, `connecting` / `connected` / `unreachable`;
- `account_poll_mono`: monotonic time of the watchdog's last successful account poll (a fresh
  positions round trip to the broker).

It is written to a temp file, fsync'd and renamed over the old one. Staleness is judged on the
monotonic clock (system-wide on Linux), so wall-clock jumps cause no false trips. An unreadable
heartbeat counts as stale. Files without the newer keys still read (the keys are None).
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

import psutil

__all__ = [
    "MAIN_HEARTBEAT",
    "WATCHDOG_HEARTBEAT",
    "Clock",
    "Heartbeat",
    "SystemClock",
    "is_same_process",
    "process_start",
    "read_heartbeat",
    "sd_notify",
    "start_matches",
    "write_heartbeat",
]

log = logging.getLogger("runtime.heartbeat")
# the file names, here so that readers (watchdog, CLI) need not import the main loop's stack
MAIN_HEARTBEAT = "heartbeat-main.json"
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
    create_time: float | None = None  # psutil create_time() of `pid` (epoch seconds)
    boot_time: float | None = None  # psutil boot_time() that create_time was computed with
    session: str | None = None  # watchdog: connecting / connected / unreachable
    account_poll_mono: float | None = None  # watchdog: last successful account poll
    waiting: str | None = None  # main: "waiting for gateway restart (HH:MM, until HH:MM)"
    # main loop: what IB's error codes say now (refusing all orders, broken farms, contracts
    # untradable this cycle), one line each; shown by `status` while they last
    conditions: tuple[str, ...] = ()

    def age(self, now_mono: float) -> float:
        return now_mono - self.mono_ts

    def account_poll_age(self, now_mono: float) -> float | None:
        return None if self.account_poll_mono is None else now_mono - self.account_poll_mono


_OWN_START: tuple[int, float, float] | None = None


def process_start(pid: int | None = None) -> tuple[float, float] | None:
    """Return (create_time, boot_time) of a process, or None when it does not exist."""
    global _OWN_START
    own = os.getpid()
    if (pid is None or pid == own) and _OWN_START is not None and _OWN_START[0] == own:
        return _OWN_START[1], _OWN_START[2]
    try:
        start = (psutil.Process(pid or own).create_time(), psutil.boot_time())
    except (psutil.Error, OSError):
        return None
    if pid is None or pid == own:
        _OWN_START = (own, *start)
    return start


def is_same_process(hb: Heartbeat) -> bool | None:
    """Is the process now holding `hb.pid` the one that wrote the heartbeat? None: the
    heartbeat records no start time (cannot tell); False: gone, or the pid was reused."""
    if hb.create_time is None:
        return None
    now = process_start(hb.pid)
    if now is None:
        return False
    return start_matches(hb, *now)


def start_matches(hb: Heartbeat, create_time: float, boot_time: float) -> bool:
    """Does a process started at `create_time` (psutil, computed with `boot_time`) match the
    writer of `hb`? Compared boot-relative, so a wall-clock step moves both sides alike."""
    if hb.create_time is None:
        return False
    if hb.boot_time is not None:
        return abs((create_time - boot_time) - (hb.create_time - hb.boot_time)) < 0.05
    return abs(create_time - hb.create_time) < 0.05


def write_heartbeat(
    path: Path,
    clock: Clock,
    cycle: int,
    phase: str,
    pid: int | None = None,
    *,
    create_time: float | None = None,
    session: str | None = None,
    account_poll_mono: float | None = None,
    waiting: str | None = None,
    conditions: tuple[str, ...] = (),
) -> Heartbeat:
    """Atomically replace the heartbeat file; return what was written. The writer's start
    time is recorded (for `pid`, default this process) unless `create_time` is given."""
    pid = pid or os.getpid()
    start = process_start(pid)
    boot = start[1] if start else None
    if create_time is None and start is not None:
        create_time = start[0]
    hb = Heartbeat(
        pid,
        clock.wall(),
        clock.monotonic(),
        cycle,
        phase,
        create_time,
        boot,
        session,
        account_poll_mono,
        waiting,
        tuple(conditions),
    )
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

        def opt(key: str) -> float | None:
            value = raw.get(key)
            return None if value is None else float(value)

        session = raw.get("session")
        return Heartbeat(
            int(raw["pid"]),
            float(raw["wall_ts"]),
            float(raw["mono_ts"]),
            int(raw["cycle"]),
            str(raw["phase"]),
            opt("create_time"),
            opt("boot_time"),
            None if session is None else str(session),
            opt("account_poll_mono"),
            None if raw.get("waiting") is None else str(raw["waiting"]),
            tuple(str(c) for c in raw.get("conditions") or ()),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
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
