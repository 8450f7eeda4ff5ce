"""The systemd units in deploy/systemd/: `systemd-analyze verify` without a word, start limits
where systemd reads them, `systemd-analyze security` at 4.0 or below, commands the CLI has,
and the notify protocol the units rely on (READY=1 and WATCHDOG=1 from the main PID).

systemd-analyze is not a Python dependency: without it (apt-get install systemd) the two
systemd-analyze tests are skipped, the others still run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually
from runtime.cli import main as cli_main
from runtime.demo import write_config

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
INSTALLED_BIN = "/opt/ib-swarm/.venv/bin/ib-swarm"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or ""
needs_systemd_analyze = pytest.mark.skipif(
    not SYSTEMD_ANALYZE,
    reason="systemd-analyze not installed (not a Python dependency: apt-get install systemd)",
)


def sections(unit: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}, repeated keys kept in order."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            out.setdefault(current, [])
        else:
            key, _, value = line.partition("=")
            out[current].append((key.strip(), value.strip()))
    return out


def test_the_units_are_one_template_pair():
    assert [u.name for u in UNITS] == ["ib-swarm-watchdog@.service", "ib-swarm@.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_start_limits_are_in_unit_where_systemd_reads_them(unit):
    s = sections(unit)
    unit_keys = {k for k, _ in s["Unit"]}
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= unit_keys
    assert not {k for k, _ in s["Service"]} & {"StartLimitIntervalSec", "StartLimitBurst"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_every_command_is_a_cli_command_on_the_accounts_config(unit, capsys):
    commands = [v for k, v in sections(unit)["Service"] if k.startswith("ExecStart")]
    assert commands
    for command in commands:
        binary, sub, *rest = shlex.split(command)
        assert binary == INSTALLED_BIN
        assert rest == ["--config", "/etc/ib-swarm/%i.toml"]
        with pytest.raises(SystemExit) as exit_info:
            cli_main([sub, "--help"])
        assert exit_info.value.code == 0, f"{sub}: not an ib-swarm command"
    capsys.readouterr()


def test_the_main_unit_is_a_notify_service_that_the_watchdog_unit_accompanies():
    main = dict(sections(ROOT / "deploy/systemd/ib-swarm@.service")["Service"])
    assert (main["Type"], main["NotifyAccess"], main["Restart"]) == ("notify", "main", "on-failure")
    assert float(main["WatchdogSec"]) > 0
    unit = sections(ROOT / "deploy/systemd/ib-swarm@.service")["Unit"]
    assert ("Wants", "network-online.target ib-swarm-watchdog@%i.service") in unit
    watchdog = dict(sections(ROOT / "deploy/systemd/ib-swarm-watchdog@.service")["Service"])
    assert watchdog["Restart"] == "always"
    for service in (main, watchdog):
        assert service["User"] == "ibswarm"
        assert service["StateDirectory"] == "ib-swarm/%i"
        assert service["ReadWritePaths"] == "/var/lib/ib-swarm/%i"


@needs_systemd_analyze
def test_systemd_analyze_verify_has_nothing_to_say(tmp_path):
    """verify also checks that ExecStart's binary exists: the copies point at a stand-in
    executable instead of /opt/ib-swarm/.venv/bin/ib-swarm; nothing else changes."""
    stand_in = tmp_path / "bin" / "ib-swarm"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS:
        text = unit.read_text()
        assert INSTALLED_BIN in text
        (units / unit.name).write_text(text.replace(INSTALLED_BIN, str(stand_in)))
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *sorted(str(p) for p in units.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_security_is_at_most_4(unit):
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 4.0, proc.stdout


@pytest.fixture
def gateway_config():
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def test_main_loop_notifies_ready_and_watchdog_from_its_main_pid(gateway, tmp_path):
    """What Type=notify, NotifyAccess=main and WatchdogSec need, checked the way systemd
    checks it: datagrams on NOTIFY_SOCKET whose kernel-supplied sender PID is the main PID."""
    cfg = write_config(
        tmp_path / "unit.toml",
        {
            "port": gateway.port,
            "dir": (tmp_path / "data").as_posix(),
            "spawn": False,  # as under systemd: the watchdog is its own unit
            "require_watchdog": False,
            "cycle_interval_s": 2.0,
            "max_cycle_s": 1.9,
            "deadline_s": 1.5,
            "write_timeout_s": 0.9,
            "heartbeat_interval_s": 0.2,
        },
    )
    sock_path = tmp_path / "notify.sock"
    log = tmp_path / "main.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, open(log, "wb") as log_file:
        sock.bind(str(sock_path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.settimeout(0.2)
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "run", "--config", str(cfg)],
            cwd=ROOT,
            env={**os.environ, "NOTIFY_SOCKET": str(sock_path)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        received: list[tuple[int, str]] = []

        def receive() -> bool:
            try:
                data, ancillary, _, _ = sock.recvmsg(256, socket.CMSG_SPACE(12))
            except TimeoutError:  # settimeout(0.2): nothing within the slice
                return False
            pid = next(
                int.from_bytes(d[:4], sys.byteorder)
                for level, kind, d in ancillary
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
            )
            received.append((pid, data.decode()))
            return {"READY=1", "WATCHDOG=1"} <= {m for _, m in received}

        def ready_or_exited() -> bool:
            return receive() or proc.poll() is not None

        try:
            eventually(ready_or_exited, 60, what="READY=1 and WATCHDOG=1 on NOTIFY_SOCKET")
            assert proc.poll() is None, log.read_text()
            proc.terminate()
            assert proc.wait(60) == 0
            sock.settimeout(0)  # the process has exited: whatever it sent is queued
            with contextlib.suppress(BlockingIOError):
                while True:
                    receive()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert {pid for pid, _ in received} == {proc.pid}, received
    messages = [m for _, m in received]
    assert messages.index("READY=1") < messages.index("WATCHDOG=1") < messages.index("STOPPING=1")
