import multiprocessing
import os
import sqlite3

import pytest
from lake import rows

from runtime.breaker import BreakerState, CircuitBreaker, ResetRefused


def test_starts_active_and_trips_escalate_only(tmp_path):
    b = CircuitBreaker(tmp_path)
    assert b.status().state is BreakerState.ACTIVE
    assert b.trip(BreakerState.REDUCING, "gate", "3 rejects").state is BreakerState.REDUCING
    assert b.trip(BreakerState.HALTED, "watchdog", "heartbeat stale").state is BreakerState.HALTED
    after = b.trip(BreakerState.REDUCING, "gate", "again")
    assert after.state is BreakerState.HALTED
    assert after.reason == "heartbeat stale"


def test_trip_survives_restart_of_every_process(tmp_path):
    CircuitBreaker(tmp_path).trip(BreakerState.HALTED, "watchdog", "daily loss")
    fresh = CircuitBreaker(tmp_path)  # a new process reading the same data dir
    status = fresh.status()
    assert (status.state, status.source, status.reason) == (
        BreakerState.HALTED,
        "watchdog",
        "daily loss",
    )


def test_reset_needs_a_person_and_a_reason_and_is_recorded(tmp_path, store):
    b = CircuitBreaker(tmp_path, store)
    b.trip(BreakerState.HALTED, "watchdog", "main loop frozen")
    with pytest.raises(ResetRefused):
        b.reset(by="", reason="ok")
    with pytest.raises(ResetRefused):
        b.reset(by="alice", reason="  ")
    assert b.status().state is BreakerState.HALTED
    status = b.reset(by="alice", reason="checked the account, restarted gateway")
    assert (status.state, status.actor) == (BreakerState.ACTIVE, "alice")
    history = rows(
        store, "SELECT from_state, to_state, source, actor FROM breaker_history ORDER BY id"
    )
    assert history == [
        {"from_state": "ACTIVE", "to_state": "HALTED", "source": "watchdog", "actor": None},
        {"from_state": "HALTED", "to_state": "ACTIVE", "source": "person", "actor": "alice"},
    ]
    [row] = rows(store, "SELECT state FROM breaker_state")
    assert row["state"] == "ACTIVE"


def test_trip_cannot_go_to_active(tmp_path):
    with pytest.raises(ValueError):
        CircuitBreaker(tmp_path).trip(BreakerState.ACTIVE, "llm", "please")


def test_unreadable_state_file_fails_closed(tmp_path):
    b = CircuitBreaker(tmp_path)
    b.trip(BreakerState.REDUCING, "gate", "x")
    b.path.write_text("{half a json")
    assert b.status().state is BreakerState.HALTED
    assert "unreadable" in b.status().reason
    assert b.trip(BreakerState.HALTED, "watchdog", "frozen").reason == "frozen"


def test_trip_works_while_the_database_is_locked(tmp_path, store):
    other = sqlite3.connect(str(store.path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    b = CircuitBreaker(tmp_path, store)
    assert b.trip(BreakerState.HALTED, "watchdog", "frozen").state is BreakerState.HALTED
    other.execute("COMMIT")
    b.trip(BreakerState.HALTED, "watchdog", "noop")  # no change; nothing new to record
    b.reset(by="bob", reason="drill over")  # the earlier transition is written now too
    history = rows(store, "SELECT to_state FROM breaker_history ORDER BY id")
    assert [r["to_state"] for r in history] == ["HALTED", "ACTIVE"]


def _trip(data_dir: str, source: str) -> None:
    CircuitBreaker(data_dir).trip(BreakerState.HALTED, source, f"trip by {source}")


def test_concurrent_trips_from_two_processes_leave_one_consistent_state(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_trip, args=(str(tmp_path), s)) for s in ("watchdog", "main")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    status = CircuitBreaker(tmp_path).status()
    assert status.state is BreakerState.HALTED and status.generation == 1


def test_a_trip_that_cannot_be_written_still_takes_effect_and_is_persisted_later(tmp_path):
    b = CircuitBreaker(tmp_path)
    # the breaker's temp file cannot be created (as with a full disk; works as root too)
    blocker = tmp_path / f".breaker.json.{os.getpid()}.tmp"
    blocker.mkdir()
    tripped = b.trip(BreakerState.HALTED, "watchdog", "frozen")
    assert tripped.state is BreakerState.HALTED and not tripped.persisted
    assert b.status().state is BreakerState.HALTED  # latched in this process
    assert CircuitBreaker(tmp_path).status().state is BreakerState.ACTIVE  # not on disk yet
    blocker.rmdir()
    assert b.status().persisted  # the next read writes it
    assert CircuitBreaker(tmp_path).status().reason == "frozen"


def test_a_root_owned_lock_file_does_not_block_the_breaker(tmp_path):
    (tmp_path / "breaker.lock").write_text("")
    (tmp_path / "breaker.lock").chmod(0o000)  # a stale lock file nobody may open
    b = CircuitBreaker(tmp_path)
    assert b.trip(BreakerState.HALTED, "watchdog", "x").persisted
