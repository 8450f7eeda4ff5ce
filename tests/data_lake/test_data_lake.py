import asyncio
import json
import multiprocessing
import sqlite3
import threading

import pytest
from lake import read as _read

from data_lake import (
    SCHEMA_VERSION,
    Contract,
    DataLakeMissing,
    SnapshotError,
    StorageUnavailable,
    Store,
    get_intent,
    insert_cycle,
    insert_intent,
    list_snapshots,
    load_snapshot,
    log_safety_event,
    log_trade,
    open_intents,
    open_readonly,
    query_safety_events,
    query_trades,
    record_decisions,
    record_order_event,
    record_signals,
    register_secret,
    save_snapshot,
)
from paper_gateway.testing import eventually


def _exec(exec_id: str, **kw):
    return {
        "exec_id": exec_id,
        "order_ref": "cmd-c1-x",
        "symbol": "NVDA",
        "sec_type": "STK",
        "side": "BOT",
        "shares": 10.0,
        "price": 100.0,
        "exec_time": "2026-11-20T15:00:00",
        **kw,
    }


def test_new_database_is_wal_and_at_the_current_schema_version(store):
    db = open_readonly(store.data_dir)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {
        "executions",
        "order_intents",
        "safety_events",
        "snapshots",
        "breaker_history",
        "llm_calls",
        "signals",
        "decisions",
        "cycles",
        "orders",
        "order_events",
        "account_snapshots",
        "position_snapshots",
    } <= set(db.table_names())


def test_reopening_does_not_reapply_migrations(tmp_path):
    first = Store.open(tmp_path)
    first.call(log_trade, _exec("E1"), timeout=5)
    first.close()
    second = Store.open(tmp_path)
    try:
        assert len(_read(second, query_trades)) == 1
    finally:
        second.close()


def _set_version(db, version):
    db.conn.execute(f"PRAGMA user_version = {version}")


def test_newer_schema_on_disk_is_refused(tmp_path):
    s = Store.open(tmp_path)
    s.call(_set_version, SCHEMA_VERSION + 1, timeout=5)
    s.close()
    with pytest.raises(StorageUnavailable, match="newer than this code"):
        Store.open(tmp_path)


def test_execution_is_recorded_once_per_exec_id(store):
    assert store.call(log_trade, _exec("E1"), timeout=5) is True
    assert store.call(log_trade, _exec("E1", price=999.0), timeout=5) is False  # replay
    rows = _read(store, query_trades)
    assert [(r["exec_id"], r["price"]) for r in rows] == [("E1", 100.0)]


def test_query_trades_filters(store):
    store.post(log_trade, _exec("E1"))
    store.post(log_trade, _exec("E2", symbol="AMD", order_ref="other"))
    assert [r["exec_id"] for r in _read(store, query_trades, symbol="AMD")] == ["E2"]
    assert [r["exec_id"] for r in _read(store, query_trades, order_ref="cmd-c1-x")] == ["E1"]


def test_intent_is_unique_by_order_ref_and_follows_order_status(store):
    intent = {
        "order_ref": "cmd-c1-a",
        "source": "commander",
        "symbol": "NVDA",
        "sec_type": "STK",
        "action": "BUY",
        "quantity": 5,
        "order_type": "MKT",
        "tif": "DAY",
    }
    assert store.call(insert_intent, intent, timeout=5) is True
    assert store.call(insert_intent, intent, timeout=5) is False
    assert [i["order_ref"] for i in _read(store, open_intents)] == ["cmd-c1-a"]
    store.post(
        record_order_event,
        order_ref="cmd-c1-a",
        perm_id=77,
        order_id=5,
        client_id=1,
        status="Filled",
        filled=5,
        remaining=0,
        avg_fill_price=101.0,
    )
    row = _read(store, get_intent, "cmd-c1-a")
    assert row is not None
    assert (row["status"], row["perm_id"], row["filled"]) == ("filled", 77, 5)
    assert _read(store, open_intents) == []
    # a late "Submitted" echo never reopens a filled intent
    store.post(
        record_order_event,
        order_ref="cmd-c1-a",
        perm_id=77,
        order_id=5,
        client_id=1,
        status="Submitted",
        filled=0,
        remaining=5,
    )
    assert (_read(store, get_intent, "cmd-c1-a") or {})["status"] == "filled"


def test_broker_reject_marks_the_intent_rejected_with_its_code(store):
    intent = {
        "order_ref": "cmd-c2-r",
        "source": "commander",
        "symbol": "NVDA",
        "sec_type": "STK",
        "action": "BUY",
        "quantity": 5,
        "order_type": "MKT",
        "tif": "DAY",
    }
    store.call(insert_intent, intent, timeout=5)
    store.post(
        record_order_event,
        order_ref="cmd-c2-r",
        perm_id=None,
        order_id=9,
        client_id=1,
        status=None,
        error_code=201,
        message="Order rejected - reason: margin",
        rejected=True,
    )
    # IB then reports the order Cancelled: the intent stays rejected
    store.post(
        record_order_event,
        order_ref="cmd-c2-r",
        perm_id=88,
        order_id=9,
        client_id=1,
        status="Cancelled",
    )
    row = _read(store, get_intent, "cmd-c2-r")
    assert row is not None
    assert row["status"] == "rejected" and row["last_error"].startswith("201:")


def test_safety_events_redact_registered_secrets(store):
    register_secret("sk-ant-api03-VERYSECRETVALUE")
    store.post(
        log_safety_event,
        "swarm",
        "llm_error",
        "auth failed for sk-ant-api03-VERYSECRETVALUE",
        details={"headers": {"x-api-key": "sk-ant-api03-VERYSECRETVALUE"}},
    )
    [event] = _read(store, query_safety_events)
    assert "VERYSECRET" not in event["reason"] + event["details"]
    assert "[REDACTED]" in event["reason"]


def test_snapshot_round_trip_and_tamper_detection(store, tmp_path):
    doc = {
        "inputs": {"NVDA": 182.0},
        "prompts": [{"hash": "abc", "text": "..."}],
        "verdicts": [{"accepted": False, "reasons": ["breaker HALTED"]}],
    }
    sid = store.call(save_snapshot, tmp_path, 7, doc, summary={"orders": 0}, timeout=5)
    db = open_readonly(tmp_path)
    assert load_snapshot(db, tmp_path, snapshot_id=sid) == doc
    assert load_snapshot(db, tmp_path, cycle_id=7) == doc
    [row] = list_snapshots(db)
    assert json.loads(row["summary"]) == {"orders": 0}
    (tmp_path / row["path"]).write_text("{}")
    with pytest.raises(SnapshotError, match="hash"):
        load_snapshot(db, tmp_path, snapshot_id=sid)


def _count_then_insert(db, prefix):
    count = db.conn.execute("SELECT COUNT(*) FROM safety_events").fetchone()[0]
    db.conn.execute(
        "INSERT INTO safety_events (at, source, kind, severity, reason) "
        "VALUES ('t', ?, 'test', 'info', ?)",
        (prefix, str(count)),
    )


def _writer(data_dir: str, prefix: str, n: int) -> None:
    store = Store.open(data_dir)
    for i in range(n):
        store.post(log_trade, _exec(f"{prefix}{i}"))
        store.post(_count_then_insert, prefix)  # read-then-write in one IMMEDIATE job
    assert store.close(60) == 0


def test_two_processes_write_the_same_file_without_loss_or_lock_errors(tmp_path):
    Store.open(tmp_path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), p, 200)) for p in ("A", "B")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    db = open_readonly(tmp_path)
    assert len(query_trades(db, limit=10_000)) == 400
    counts = sorted(int(r["reason"]) for r in query_safety_events(db, limit=10_000))
    assert counts == list(range(400))  # every read-then-write saw the one before it


def _insert_twice(db):
    for _ in range(2):
        db.conn.execute(
            "INSERT INTO executions (exec_id, symbol, sec_type, side, shares, price, "
            "exec_time, recorded_at) VALUES ('X', 'A', 'STK', 'BOT', 1, 1, 't', 't')"
        )


def test_a_failing_job_rolls_back_entirely(store):
    with pytest.raises(StorageUnavailable, match="UNIQUE"):
        store.call(_insert_twice, timeout=5)
    assert _read(store, query_trades) == []


# --- the single writer under a lock held by another process ----------------------------------
def _hold_exclusive_lock(path, locked: threading.Event, release: threading.Event):
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=0.1)
    conn.execute("BEGIN EXCLUSIVE")
    locked.set()
    release.wait(30)
    conn.execute("COMMIT")
    conn.close()


@pytest.fixture
def locked(store):
    """Another connection holds the write lock until the test sets the returned event."""
    is_locked, release = threading.Event(), threading.Event()
    t = threading.Thread(target=_hold_exclusive_lock, args=(store.path, is_locked, release))
    t.start()
    assert is_locked.wait(5)
    yield release
    release.set()
    t.join(10)


def test_posted_events_wait_out_a_lock_and_are_all_written_in_order(store, locked):
    for i in range(20):
        store.post(log_safety_event, "test", "during_lock", str(i))
    eventually(lambda: store.failing, timeout=10, what="writer sees the lock")
    assert store.backlog == 20
    locked.set()
    rows = _read(store, query_safety_events, kind="during_lock")
    assert [r["reason"] for r in rows] == [str(i) for i in range(20)]
    assert not store.failing


@pytest.mark.asyncio
async def test_awaited_write_under_a_lock_times_out_and_is_never_applied(store, locked):
    intent = {
        "order_ref": "cmd-c3-late",
        "source": "commander",
        "symbol": "NVDA",
        "sec_type": "STK",
        "action": "BUY",
        "quantity": 1,
        "order_type": "MKT",
        "tif": "DAY",
    }
    store.post(log_safety_event, "test", "ahead", "queued first")  # holds the head of the queue
    with pytest.raises(StorageUnavailable, match="not done within"):
        await store.run(insert_intent, intent, timeout=0.3)
    locked.set()
    await asyncio.to_thread(store.flush, 10)
    assert _read(store, get_intent, "cmd-c3-late") is None  # cancelled before it started
    assert len(_read(store, query_safety_events, kind="ahead")) == 1


@pytest.mark.asyncio
async def test_reads_answer_while_another_process_holds_the_write_lock(store, locked):
    rows = await store.read(query_trades, timeout=2)
    assert rows == []


def test_queue_overflow_is_counted_and_recorded_once_writable(tmp_path):
    s = Store(tmp_path, max_queue=5)
    s.data_dir.mkdir(exist_ok=True)
    # not started: nothing drains the queue
    for i in range(8):
        s.post(log_safety_event, "test", "flood", str(i))
    assert (s.backlog, s.dropped) == (5, 3)
    s._thread.start()
    assert s.flush(10)
    s.close()
    events = query_safety_events(open_readonly(tmp_path))
    assert [e["kind"] for e in events].count("flood") == 5
    [overflow] = [e for e in events if e["kind"] == "audit_overflow"]
    assert "3 audit writes were dropped" in overflow["reason"]


def test_readonly_open_never_creates_a_directory_or_database(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataLakeMissing, match="does not exist"):
        open_readonly(missing)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataLakeMissing, match="no database"):
        open_readonly(empty)
    assert list(empty.iterdir()) == []
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(DataLakeMissing, match="not a directory"):
        open_readonly(afile)


def _signal(instance: str, symbol: str, action: str = "BUY", status: str = "valid"):
    return {
        "cycle_id": 1,
        "instance_id": instance,
        "provider": "offline",
        "status": status,
        "symbol": symbol,
        "action": action,
        "sec_type": "STK",
    }


def _decision(symbol: str, sources: list[str]):
    return {
        "symbol": symbol,
        "action": "BUY",
        "sec_type": "STK",
        "order_type": "LMT",
        "limit_price": 10.0,
        "quantity": 1,
        "reason": "test",
        "sources": sources,
    }


def _linked(db):
    return sorted(
        (r["decision_id"], r["instance_id"], r["symbol"])
        for r in db.query(
            "SELECT ds.decision_id, s.instance_id, s.symbol FROM decision_signals ds "
            "JOIN signals s ON s.id = ds.signal_id"
        )
    )


def test_decisions_carry_their_signals_as_foreign_keys(store):
    store.call(insert_cycle, 1, timeout=5)
    store.call(
        record_signals,
        [
            _signal("a", "MSFT"),
            _signal("b", "MSFT"),
            _signal("c", "MSFT"),  # not a source of the decision
            _signal("a", "NVDA"),  # another contract
            _signal("b", "MSFT", status="abstain"),
            _signal("a", "MSFT", action="SELL"),  # the other side
        ],
        timeout=5,
    )
    [msft, nvda] = store.call(
        record_decisions, 1, [_decision("MSFT", ["a", "b"]), _decision("NVDA", ["a"])], timeout=5
    )
    assert _read(store, _linked) == [(msft, "a", "MSFT"), (msft, "b", "MSFT"), (nvda, "a", "NVDA")]
    # an option, carried as a Contract (as the daemon stores them): same expiry, strike, right
    put = Contract.option("AMD", "20270108", 162.5, "P")

    def sell(instance: str, contract: Contract) -> dict[str, object]:
        return {**_signal(instance, "AMD", action="SELL"), "contract": contract}

    store.call(
        record_signals,
        [
            sell("a", put),
            sell("b", Contract.option("AMD", "20270108", 165.0, "P")),  # another strike
            sell("c", Contract.option("AMD", "20270108", 162.5, "C")),  # another right
        ],
        timeout=5,
    )
    decision = {**_decision("AMD", ["a", "b", "c"]), "action": "SELL", "contract": put}
    [amd] = store.call(record_decisions, 1, [decision], timeout=5)
    assert [x for x in _read(store, _linked) if x[0] == amd] == [(amd, "a", "AMD")]


def test_a_version_2_database_gets_its_decisions_linked_on_upgrade(tmp_path):
    s = Store.open(tmp_path)
    s.call(insert_cycle, 1, timeout=5)
    s.call(record_signals, [_signal("a", "MSFT"), _signal("c", "MSFT")], timeout=5)
    [decision] = s.call(record_decisions, 1, [_decision("MSFT", ["a"])], timeout=5)

    def downgrade(db):  # the file as version 2 wrote it: no link table
        db.conn.execute("DROP TABLE decision_signals")
        db.conn.execute("PRAGMA user_version = 2")

    s.call(downgrade, timeout=5)
    s.close()
    upgraded = Store.open(tmp_path)
    try:
        assert _read(upgraded, _linked) == [(decision, "a", "MSFT")]
    finally:
        upgraded.close()
