"""A watchdog without a broker session, on an injected clock: for judging heartbeats and
processes in-process (the drills run the real one)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from data_lake import Store
from runtime.config import Secrets, parse_config
from runtime.heartbeat import Clock
from runtime.watchdog import Watchdog

ROOT = Path(__file__).resolve().parents[1]


class FakeClock(Clock):
    def __init__(self) -> None:
        self.mono, self.wall_s = 1000.0, 1_700_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_s


@contextmanager
def offline_watchdog(tmp_path: Path, **watchdog: Any) -> Iterator[Watchdog]:
    """config/paper.toml with its data in `tmp_path`, a 5 s heartbeat timeout and these
    `[watchdog]` keys; a FakeClock."""
    data = tomllib.loads((ROOT / "config/paper.toml").read_text())
    data["data"]["dir"] = str(tmp_path)
    data["watchdog"].update({"heartbeat_timeout_s": 5.0, **watchdog})
    w = Watchdog.create(parse_config(data), Secrets({}), Store.open(tmp_path), clock=FakeClock())
    try:
        yield w
    finally:
        w.store.close(10)
