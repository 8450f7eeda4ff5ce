"""Run `python -m paper_gateway` as its own process on free loopback ports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["gateway_process"]


@contextmanager
def gateway_process(
    *args: str, stderr: IO[Any] | int | None = subprocess.DEVNULL, cwd: str | Path | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the gateway's ready line ({"event", "port", "admin_port", "pid"}); SIGTERM it
    afterwards (SIGKILL if it does not stop within 10 s)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "paper_gateway",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--log-level",
            "WARNING",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=cwd,
    )
    try:
        if proc.stdout is None:
            raise RuntimeError("paper gateway started without a stdout pipe")
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("paper gateway exited before it was ready")
        ready: dict[str, Any] = json.loads(line)
        ready["pid"] = proc.pid
        yield ready
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
