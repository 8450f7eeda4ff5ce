"""Real processes for end-to-end tests and drills: one config writer, the CLI, start/stop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ib_client import NAME as IB_CLIENT_LIBRARY

from paper_gateway.testing import eventually
from runtime.demo import write_config as demo_config
from runtime.heartbeat import Heartbeat, read_heartbeat

ROOT = Path(__file__).resolve().parents[1]
HB_TIMEOUT = 1.0
POLL = 0.25


def write_config(
    tmp_path: Path, port: int, instances: tuple[str, ...] = ("index_trend.json",), **overrides: Any
) -> Path:
    """Write a test config (config/demo.toml with these keys replaced) and return its path."""
    inst = tmp_path / "instances"
    inst.mkdir(parents=True, exist_ok=True)
    for name in instances:
        shutil.copy(ROOT / "swarm_intelligence/active_instances" / name, inst / name)
    values: dict[str, Any] = {
        "port": port,
        "dir": (tmp_path / "data").as_posix(),
        "instances_dir": inst.as_posix(),
        "templates_dir": (ROOT / "swarm_intelligence/templates").as_posix(),
        "cycle_interval_s": 2.0,
        "max_cycle_s": 1.9,
        "heartbeat_interval_s": 0.2,
        "heartbeat_timeout_s": HB_TIMEOUT,
        "poll_interval_s": POLL,
        "close_wait_s": 2.0,
        "connect_timeout_s": 3.0,
        "request_timeout_s": 3.0,
        "client_library": IB_CLIENT_LIBRARY,
        **overrides,
    }
    # a swarm never outlives its cycle; an order never waits longer than a cycle for its intent
    values.setdefault("deadline_s", round(values["max_cycle_s"] * 0.8, 3))
    values.setdefault("write_timeout_s", round(min(1.0, values["max_cycle_s"] * 0.5), 3))
    return demo_config(tmp_path / "test.toml", values)


def start(
    cmd: str, cfg: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `python -m runtime CMD --config CFG ...` (stdout and stderr together)."""
    return subprocess.Popen(
        [sys.executable, "-m", "runtime", cmd, "--config", str(cfg), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run `python -m runtime ARGS` to completion, `stdin` on its stdin (by default nothing:
    EOF at once, never the terminal pytest was started from, so a prompt answers no)."""
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def data(tmp_path: Path) -> Path:
    """The data directory `write_config` points at."""
    return tmp_path / "data"


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    """Signal a process and wait for it (killing it after 30 s)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def stop_watchdog(tmp_path: Path) -> None:
    """Stop a watchdog that outlived its main loop (SIGTERM, wait for its stopped beat)."""
    hb = read_heartbeat(data(tmp_path) / "heartbeat-watchdog.json")
    if hb is not None and hb.phase != "stopped":
        try:
            os.kill(hb.pid, signal.SIGTERM)
            eventually(
                lambda: heartbeat(data(tmp_path) / "heartbeat-watchdog.json").phase == "stopped",
                timeout=15,
                what="watchdog stopped",
            )
        except ProcessLookupError:
            pass


def heartbeat(path: Path) -> Heartbeat:
    """The heartbeat at `path`, which must exist (AssertionError naming the file otherwise)."""
    hb = read_heartbeat(path)
    if hb is None:
        raise AssertionError(f"no heartbeat at {path}")
    return hb
