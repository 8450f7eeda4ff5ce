"""deploy/supervisord.conf under the real supervisord (from PyPI, pinned in requirements.txt)
against the paper gateway: both programs RUNNING, the main loop SIGKILLed and restarted by
supervisord while the watchdog program, never restarted, trips the breaker and flattens.

The shipped file is used as is except for its paths (the venv, /etc, /var, /run become the
test's interpreter and temporary directories) and its user/chown lines (the test may not run
as root). Measured: ~20 s, much of it waiting for the programs to stay up startsecs (3 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from procs import heartbeat

from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.demo import write_config
from runtime.heartbeat import read_heartbeat

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "supervisord.conf"


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def adapt(text: str, subs: dict[str, str]) -> str:
    """The shipped config with its paths replaced (each must occur) and no user switching."""
    for old, new in subs.items():
        assert old in text, f"{old} no longer in deploy/supervisord.conf: update this test"
        text = text.replace(old, new)
    lines = text.splitlines()
    kept = [line for line in lines if not line.startswith(("user=", "chown="))]
    assert len(lines) - len(kept) == 4  # [supervisord] user, chown, one user= per program
    return "\n".join(kept) + "\n"


class Supervisor:
    def __init__(self, conf: Path, env: dict[str, str]) -> None:
        self.conf = conf
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def status(self) -> dict[str, tuple[str, int | None]]:
        """{program: (state, pid)} as supervisorctl prints it."""
        out: dict[str, tuple[str, int | None]] = {}
        for line in self.ctl("status").stdout.splitlines():
            name, state, *rest = line.split()
            pid = int(rest[1].rstrip(",")) if rest[:1] == ["pid"] else None
            out[name] = (state, pid)
        return out

    def running(self, *names: str) -> dict[str, int] | None:
        st = self.status()
        if all(st.get(n, ("", None))[0] == "RUNNING" for n in names):
            return {n: pid for n in names if (pid := st[n][1]) is not None}
        return None

    def close(self) -> None:
        """Stop everything, whatever state the test left it in."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.proc.poll() is None:
            self.proc.terminate()  # supervisord stops its programs (SIGTERM, then SIGKILL)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for child in children:  # programs run in their own process groups
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


@pytest.fixture
def supervisor_env(tmp_path) -> Iterator[dict[str, Any]]:
    # a short directory for the Unix socket (sun_path holds 108 bytes; tmp_path may be long)
    with tempfile.TemporaryDirectory(prefix="ibs-", dir="/tmp") as short:
        yield {"run": Path(short), "log": tmp_path / "log", "data": tmp_path / "data"}


def test_supervisord_runs_both_programs_and_restarts_a_killed_main_loop(
    gateway, admin, tmp_path, supervisor_env
):
    admin.call("set_position", symbol="AAPL", quantity=50, avg_cost=228.0)
    admin.call("set_position", symbol="JPM", quantity=-30, avg_cost=212.0)
    data, log, run = supervisor_env["data"], supervisor_env["log"], supervisor_env["run"]
    data.mkdir()
    log.mkdir()
    cfg = write_config(
        tmp_path / "paper.toml",
        {
            "port": gateway.port,
            "dir": data.as_posix(),
            "spawn": False,  # the watchdog is its own program
            "cycle_interval_s": 2.0,
            "max_cycle_s": 1.9,
            "deadline_s": 1.5,
            "write_timeout_s": 0.9,
            "heartbeat_interval_s": 0.2,
            "heartbeat_timeout_s": 1.0,
            "poll_interval_s": 0.1,
            "close_wait_s": 2.0,
            "connect_timeout_s": 3.0,
            "request_timeout_s": 3.0,
        },
    )
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        adapt(
            SHIPPED.read_text(),
            {
                "/opt/ib-swarm/.venv/bin/ib-swarm": f"{sys.executable} -m runtime",
                "/etc/ib-swarm/paper.toml": str(cfg),
                "/var/lib/ib-swarm/paper": str(data),
                "/var/log/ib-swarm": str(log),
                "/run/ib-swarm-supervisor.sock": str(run / "supervisor.sock"),
                "/run/ib-swarm-supervisord.pid": str(run / "supervisord.pid"),
            },
        )
    )
    # The programs run from the data dir, so `runtime` comes from PYTHONPATH (the checkout).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sup = Supervisor(conf, env)
    try:
        pids = eventually(
            lambda: sup.running("ib-swarm-main", "ib-swarm-watchdog"),
            timeout=60,
            what="both programs RUNNING",
        )
        eventually(
            lambda: (hb := read_heartbeat(data / "heartbeat-main.json")) and hb.cycle >= 1,
            timeout=30,
            what="main loop cycling",
        )
        eventually(lambda: 999 in admin.call("state")["clients"], 10, what="watchdog session")
        # The watchdog sees the pid gone (or a zombie) at its next poll (0.1 s); the restarted
        # main loop writes its first heartbeat only after its imports, so the trip comes first.
        os.kill(pids["ib-swarm-main"], signal.SIGKILL)

        def halted() -> bool:
            try:
                return bool(json.loads((data / "breaker.json").read_text())["state"] == "HALTED")
            except FileNotFoundError:
                return False

        eventually(halted, timeout=10, what="breaker.json HALTED")
        eventually(lambda: admin.call("state")["positions"] == [], 15, what="account flat")
        breaker = json.loads((data / "breaker.json").read_text())
        assert breaker["source"] == "watchdog"
        # "is gone", or "is a zombie" when the watchdog looks before supervisord reaps it
        assert re.search(
            f"main loop process {pids['ib-swarm-main']} is (gone|a zombie)", breaker["reason"]
        )

        after = eventually(
            lambda: (
                (p := sup.running("ib-swarm-main", "ib-swarm-watchdog"))
                and p["ib-swarm-main"] != pids["ib-swarm-main"]
                and p
            ),
            timeout=60,
            what="main loop restarted by supervisord",
        )
        assert after["ib-swarm-watchdog"] == pids["ib-swarm-watchdog"]  # never restarted
        eventually(
            lambda: (
                (hb := read_heartbeat(data / "heartbeat-main.json"))
                and hb.pid == after["ib-swarm-main"]
                and hb.cycle >= 1
            ),
            timeout=30,
            what="the restarted main loop cycling",
        )
        assert halted(), "a restart never resets the breaker"
        assert admin.call("state")["positions"] == []
        assert (log / "main.log").stat().st_size > 0 and (log / "watchdog.log").exists()

        assert sup.ctl("shutdown").returncode == 0
        assert sup.proc.wait(60) == 0
        assert heartbeat(data / "heartbeat-main.json").phase == "stopped"
    finally:
        sup.close()
