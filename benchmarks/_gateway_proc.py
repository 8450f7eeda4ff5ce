"""Start `python -m paper_gateway` as a separate process on free loopback ports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["gateway_process"]


@contextmanager
def gateway_process(*args: str) -> Iterator[dict[str, Any]]:
    """Yield the gateway's ready line ({"port", "admin_port"}); SIGTERM it afterwards."""
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
        text=True,
    )
    try:
        assert proc.stdout is not None
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
