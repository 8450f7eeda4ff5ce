import os
import socket
import subprocess
import sys

from procs import heartbeat

from runtime.heartbeat import Clock, is_same_process, read_heartbeat, sd_notify, write_heartbeat


class FakeClock(Clock):
    def __init__(self, mono=100.0, wall=1_700_000_000.0):
        self.mono, self.wall_s = mono, wall

    def monotonic(self):
        return self.mono

    def wall(self):
        return self.wall_s


def test_heartbeat_round_trip_and_age_on_the_monotonic_clock(tmp_path):
    clock = FakeClock()
    path = tmp_path / "hb.json"
    written = write_heartbeat(path, clock, cycle=7, phase="think")
    assert read_heartbeat(path) == written
    assert written.pid == os.getpid()
    clock.mono += 3.5
    clock.wall_s -= 3600  # an NTP step backwards changes nothing
    assert heartbeat(path).age(clock.monotonic()) == 3.5
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed, not left behind


def test_half_written_or_garbage_heartbeat_reads_as_missing(tmp_path):
    path = tmp_path / "hb.json"
    path.write_text('{"pid": 12, "wall_ts": 1.0, "mono_')
    assert read_heartbeat(path) is None
    path.write_text('{"pid": "x", "wall_ts": 1, "mono_ts": 1, "cycle": 1, "phase": "a"}')
    assert read_heartbeat(path) is None
    assert read_heartbeat(tmp_path / "absent.json") is None


def test_sd_notify_sends_to_the_notify_socket(tmp_path):
    addr = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(addr)
        server.settimeout(5)
        for message in ("READY=1", "WATCHDOG=1", "STOPPING=1"):
            assert sd_notify(message, env={"NOTIFY_SOCKET": addr}) is True
            assert server.recv(100) == message.encode()


def test_sd_notify_without_systemd_is_a_no_op():
    assert sd_notify("READY=1", env={}) is False
    assert sd_notify("READY=1", env={"NOTIFY_SOCKET": "/nonexistent/sock"}) is False


def test_heartbeat_records_the_writers_start_time_and_the_watchdogs_session(tmp_path):
    clock = FakeClock()
    path = tmp_path / "hb.json"
    written = write_heartbeat(
        path, clock, cycle=3, phase="watching", session="connected", account_poll_mono=99.5
    )
    hb = read_heartbeat(path)
    assert hb == written
    assert (hb.session, hb.account_poll_mono) == ("connected", 99.5)
    assert hb.account_poll_age(clock.monotonic()) == 0.5
    assert hb.create_time is not None and is_same_process(hb) is True


def test_a_heartbeat_without_the_newer_keys_still_reads(tmp_path):
    path = tmp_path / "hb.json"
    path.write_text('{"pid": 12, "wall_ts": 1.0, "mono_ts": 2.0, "cycle": 1, "phase": "idle"}')
    hb = read_heartbeat(path)
    assert hb is not None and hb.session is None and hb.account_poll_age(5.0) is None
    assert is_same_process(hb) is None  # no start time recorded: cannot tell


def test_a_reused_pid_is_not_the_same_process(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "hb.json"
        real = write_heartbeat(path, FakeClock(), 1, "idle", pid=sleeper.pid)
        assert is_same_process(real) is True
        assert real.create_time is not None
        other = write_heartbeat(
            path, FakeClock(), 1, "idle", pid=sleeper.pid, create_time=real.create_time - 5
        )
        assert is_same_process(other) is False
    finally:
        sleeper.kill()
        sleeper.wait()
    assert is_same_process(real) is False  # gone


def test_the_start_time_check_survives_a_wall_clock_step(tmp_path):
    import dataclasses

    hb = write_heartbeat(tmp_path / "hb.json", FakeClock(), 1, "idle")
    assert hb.create_time is not None and hb.boot_time is not None
    # the wall clock (and so psutil's create_time and boot_time) stepped by 20 s since
    stepped = dataclasses.replace(hb, create_time=hb.create_time - 20, boot_time=hb.boot_time - 20)
    assert is_same_process(stepped) is True
    assert is_same_process(dataclasses.replace(hb, create_time=hb.create_time - 20)) is False
