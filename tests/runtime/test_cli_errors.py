"""The CLI under operator mistakes and faults: one line and exit 2, never a traceback
(unless --debug), never a secret, never a file created by a read-only command."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
from procs import cli, data, write_config

from data_lake import Store, log_safety_event
from runtime.cli import main as cli_main
from runtime.config import CLIENT_LIBRARIES
from runtime.instance_lock import ANOTHER_WATCHDOG, acquire, role_lock_path

SECRET = "sk-ant-api03-SECRETSECRETSECRET"


def _assert_one_line_error(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr + out.stdout
    assert needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_read_only_commands_on_a_missing_data_dir_create_nothing(tmp_path):
    cfg = write_config(tmp_path, 1)
    for args in (("status",), ("status", "--json"), ("trades",), ("snapshots",), ("breaker",)):
        out = cli(*args, "--config", str(cfg))
        _assert_one_line_error(out, "does not exist")
    assert not data(tmp_path).exists()


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    cfg = write_config(tmp_path, 1)
    data(tmp_path).write_text("not a directory")
    _assert_one_line_error(cli("status", "--config", str(cfg)), "not a directory")


def test_unknown_snapshot_id_is_one_line(tmp_path):
    cfg = write_config(tmp_path, 1)
    Store.open(data(tmp_path)).close()
    _assert_one_line_error(
        cli("snapshots", "--config", str(cfg), "--show", "999"), "no snapshot with id 999"
    )
    _assert_one_line_error(
        cli("snapshots", "show", "999", "--config", str(cfg)), "no snapshot with id 999"
    )
    _assert_one_line_error(cli("snapshots", "show", "--config", str(cfg)), "needs an id")
    _assert_one_line_error(
        cli("snapshots", "list", "7", "--config", str(cfg)), "goes with `snapshots show`"
    )


LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA locking_mode = EXCLUSIVE")
conn.execute("BEGIN EXCLUSIVE")
conn.execute("INSERT INTO cycles (started_at) VALUES ('x')")
print("locked", flush=True)
time.sleep(30)
"""


def test_a_database_locked_against_readers_answers_within_two_seconds(tmp_path):
    cfg = write_config(tmp_path, 1)
    Store.open(data(tmp_path)).close()
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(data(tmp_path) / "trading.sqlite3")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        out = cli("status", "--config", str(cfg))
        elapsed = time.monotonic() - t0
        _assert_one_line_error(out, "locked")
        print(f"status answered a locked database in {elapsed:.2f}s (CLI start-up included)")
    finally:
        locker.kill()
        locker.wait()


def test_secrets_never_appear_even_in_a_debug_traceback(tmp_path):
    cfg = write_config(tmp_path, 1)
    store = Store.open(data(tmp_path))
    store.call(log_safety_event, "test", "x", "y", timeout=5)
    store.close()
    (data(tmp_path) / "snapshots").mkdir()
    env = {"ANTHROPIC_API_KEY": SECRET}
    bad = tmp_path / SECRET  # a path carrying the secret ends up in an exception's text
    bad.mkdir()
    cfg.write_text(cfg.read_text().replace(data(tmp_path).as_posix(), (bad / "x").as_posix()))
    for args in (("status",), ("--debug", "status")):
        out = cli(*args, "--config", str(cfg), env=env)
        assert out.returncode != 0
        assert SECRET not in out.stdout + out.stderr
        assert "[REDACTED]" in out.stderr


@pytest.fixture
def library_loggers_unquieted():
    """conftest quiets the client libraries for the whole test run; a test of the CLI's own
    quieting needs them as a command finds them (NOTSET), and restores conftest's after."""
    loggers = [logging.getLogger(name) for name in CLIENT_LIBRARIES]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
    yield loggers
    for logger, level in zip(loggers, before, strict=True):
        logger.setLevel(level)


def test_check_on_a_closed_port_says_it_once_without_the_librarys_lines(
    tmp_path, capsys, caplog, library_loggers_unquieted
):
    cfg = write_config(tmp_path, 1)  # nothing listens on port 1
    assert cli_main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "127.0.0.1:1 unreachable" in err
    library = [r for r in caplog.records if r.name.split(".")[0] in CLIENT_LIBRARIES]
    assert library == [], [r.getMessage() for r in library]  # "API connection failed" ...
    assert [lg.level for lg in library_loggers_unquieted] == [logging.NOTSET] * 2  # restored


def test_a_spawned_watchdog_leaves_the_one_line_to_its_main_loop_a_person_gets_the_pid(tmp_path):
    cfg = write_config(tmp_path, 1)
    data(tmp_path).mkdir()
    held = acquire(role_lock_path(data(tmp_path), "watchdog"), "the test's watchdog")
    try:
        spawned = cli("watchdog", "--config", str(cfg), "--spawned")
        assert spawned.returncode == ANOTHER_WATCHDOG and spawned.stderr == "", spawned
        by_hand = cli("watchdog", "--config", str(cfg))
        assert by_hand.returncode == ANOTHER_WATCHDOG
        assert f"refused: the watchdog lock of {data(tmp_path)} is already held by pid " in (
            by_hand.stderr
        )
        assert f"pid {os.getpid()} " in by_hand.stderr
        assert len(by_hand.stderr.strip().splitlines()) == 1, by_hand.stderr
    finally:
        held.release()
