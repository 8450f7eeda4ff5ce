"""The command-line contract: ready line on stdout, serves until SIGTERM, clear errors."""

import json
import signal
import subprocess
import sys

from ib_client import IB

from paper_gateway import AdminClient


def _start(*args: str) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "paper_gateway", "--port", "0", "--admin-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the ready line (or EOF if it died)
    assert line, proc.stderr.read() if proc.stderr else "no output"
    return proc, json.loads(line)


def test_ready_line_then_serves_until_sigterm():
    proc, ready = _start("--seed", "3", "--account", "DU5550001")
    try:
        assert ready["event"] == "ready"
        assert ready["port"] > 0 and ready["admin_port"] > 0
        ib = IB()
        ib.connect("127.0.0.1", ready["port"], clientId=1, timeout=5)
        assert ib.managedAccounts() == ["DU5550001"]
        with AdminClient(ready["admin_port"]) as admin:
            assert admin.call("state")["clients"] == [1]
        ib.disconnect()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_non_loopback_host_is_refused_with_a_clear_message():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "paper_gateway",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--admin-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "loopback" in proc.stderr


def test_port_in_use_exits_non_zero():
    proc, ready = _start()
    try:
        clash = subprocess.run(
            [
                sys.executable,
                "-m",
                "paper_gateway",
                "--port",
                str(ready["port"]),
                "--admin-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert clash.returncode == 1
        assert "cannot listen" in clash.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_restart_schedule_and_limits_from_the_command_line():
    proc, ready = _start(
        "--daily-restart",
        "23:45",
        "--restart-tz",
        "Europe/Zurich",
        "--restart-down-s",
        "5",
        "--reauth-weekday",
        "sun",
        "--max-market-data-lines",
        "7",
    )
    try:
        with AdminClient(ready["admin_port"]) as admin:
            state = admin.call("state")
            assert state["next_restart"].endswith(("+01:00", "+02:00"))  # Zurich time
            assert "T23:45:00" in state["next_restart"] and state["down"] is None
            assert state["max_market_data_lines"] == 7
            assert state["historical_pacing"] is True  # the command line plays it by default
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_historical_pacing_can_be_switched_off_on_the_command_line():
    proc, ready = _start("--no-historical-pacing")
    try:
        with AdminClient(ready["admin_port"]) as admin:
            assert admin.call("state")["historical_pacing"] is False
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_a_bad_restart_time_is_refused_with_a_clear_message():
    args = ["--port", "0", "--admin-port", "0", "--daily-restart", "25:99"]
    proc = subprocess.run(
        [sys.executable, "-m", "paper_gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "daily restart must be HH:MM" in proc.stderr
