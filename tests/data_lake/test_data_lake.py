import json
import multiprocessing
import sqlite3

import pytest

from data_lake import (
    SCHEMA_VERSION,
    SnapshotError,
    get_intent,
    insert_intent,
    list_snapshots,
    load_snapshot,
    log_safety_event,
    log_trade,
    open_db,
    open_intents,
    query_safety_events,
    query_trades,
    record_order_event,
    register_secret,
    save_snapshot,
    transaction,
)


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


def test_new_database_is_wal_and_at_the_current_schema_version(tmp_path):
    db = open_db(tmp_path)
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
    db = open_db(tmp_path)
    log_trade(db, _exec("E1"))
    db2 = open_db(tmp_path)
    assert len(query_trades(db2)) == 1


def test_newer_schema_on_disk_is_refused(tmp_path):
    db = open_db(tmp_path)
    db.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this code"):
        open_db(tmp_path)


def test_execution_is_recorded_once_per_exec_id(tmp_path):
    db = open_db(tmp_path)
    assert log_trade(db, _exec("E1")) is True
    assert log_trade(db, _exec("E1", price=999.0)) is False  # replayed report
    rows = query_trades(db)
    assert [(r["exec_id"], r["price"]) for r in rows] == [("E1", 100.0)]


def test_query_trades_filters(tmp_path):
    db = open_db(tmp_path)
    log_trade(db, _exec("E1"))
    log_trade(db, _exec("E2", symbol="AMD", order_ref="other"))
    assert [r["exec_id"] for r in query_trades(db, symbol="AMD")] == ["E2"]
    assert [r["exec_id"] for r in query_trades(db, order_ref="cmd-c1-x")] == ["E1"]


def test_intent_is_unique_by_order_ref_and_follows_order_status(tmp_path):
    db = open_db(tmp_path)
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
    assert insert_intent(db, intent) is True
    assert insert_intent(db, intent) is False
    assert [i["order_ref"] for i in open_intents(db)] == ["cmd-c1-a"]
    record_order_event(
        db,
        order_ref="cmd-c1-a",
        perm_id=77,
        order_id=5,
        client_id=1,
        status="Filled",
        filled=5,
        remaining=0,
        avg_fill_price=101.0,
    )
    row = get_intent(db, "cmd-c1-a")
    assert (row["status"], row["perm_id"], row["filled"]) == ("filled", 77, 5)
    assert open_intents(db) == []
    # a late "Submitted" echo never reopens a filled intent
    record_order_event(
        db,
        order_ref="cmd-c1-a",
        perm_id=77,
        order_id=5,
        client_id=1,
        status="Submitted",
        filled=0,
        remaining=5,
    )
    assert get_intent(db, "cmd-c1-a")["status"] == "filled"


def test_safety_events_redact_registered_secrets(tmp_path):
    db = open_db(tmp_path)
    register_secret("sk-ant-api03-VERYSECRETVALUE")
    log_safety_event(
        db,
        "swarm",
        "llm_error",
        "auth failed for sk-ant-api03-VERYSECRETVALUE",
        details={"headers": {"x-api-key": "sk-ant-api03-VERYSECRETVALUE"}},
    )
    [event] = query_safety_events(db)
    assert "VERYSECRET" not in event["reason"] + event["details"]
    assert "[REDACTED]" in event["reason"]


def test_snapshot_round_trip_and_tamper_detection(tmp_path):
    db = open_db(tmp_path)
    doc = {
        "inputs": {"NVDA": 182.0},
        "prompts": [{"hash": "abc", "text": "..."}],
        "verdicts": [{"accepted": False, "reasons": ["breaker HALTED"]}],
    }
    sid = save_snapshot(db, tmp_path, 7, doc, summary={"orders": 0})
    assert load_snapshot(db, tmp_path, snapshot_id=sid) == doc
    assert load_snapshot(db, tmp_path, cycle_id=7) == doc
    [row] = list_snapshots(db)
    assert json.loads(row["summary"]) == {"orders": 0}
    (tmp_path / row["path"]).write_text("{}")
    with pytest.raises(SnapshotError, match="hash"):
        load_snapshot(db, tmp_path, snapshot_id=sid)


def _writer(data_dir: str, prefix: str, n: int) -> None:
    db = open_db(data_dir)
    for i in range(n):
        log_trade(db, _exec(f"{prefix}{i}"))
        with transaction(db) as conn:  # read-then-write under the write lock
            count = conn.execute("SELECT COUNT(*) FROM safety_events").fetchone()[0]
            conn.execute(
                "INSERT INTO safety_events (at, source, kind, severity, reason) "
                "VALUES ('t', ?, 'test', 'info', ?)",
                (prefix, str(count)),
            )


def test_two_processes_write_the_same_file_without_loss_or_lock_errors(tmp_path):
    open_db(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), p, 200)) for p in ("A", "B")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    db = open_db(tmp_path)
    assert len(query_trades(db, limit=10_000)) == 400
    counts = sorted(int(r["reason"]) for r in query_safety_events(db, limit=10_000))
    assert counts == list(range(400))  # every read-then-write saw the one before it


def test_transaction_rolls_back_on_error(tmp_path):
    db = open_db(tmp_path)
    with pytest.raises(sqlite3.IntegrityError), transaction(db) as conn:
        conn.execute(
            "INSERT INTO executions (exec_id, symbol, sec_type, side, shares, price, "
            "exec_time, recorded_at) VALUES ('X', 'A', 'STK', 'BOT', 1, 1, 't', 't')"
        )
        conn.execute(
            "INSERT INTO executions (exec_id, symbol, sec_type, side, shares, price, "
            "exec_time, recorded_at) VALUES ('X', 'A', 'STK', 'BOT', 1, 1, 't', 't')"
        )
    assert query_trades(db) == []
