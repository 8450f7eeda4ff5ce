"""Retention: snapshots pruned and compressed by age; backups of a live database."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading

import pytest
from procs import cli, data, write_config

from data_lake import (
    Store,
    backup_database,
    load_snapshot,
    log_safety_event,
    open_readonly,
    save_snapshot,
)


def _ago(days: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat()


def test_prune_deletes_old_snapshots_and_compresses_older_ones_that_still_load(tmp_path):
    cfg = write_config(tmp_path, 1)
    d = data(tmp_path)
    store = Store.open(d)
    ids = {}
    for cycle, age in ((1, 40), (2, 20), (3, 0)):
        doc = {"cycle": cycle, "payload": "x" * 5000}
        ids[cycle] = store.call(save_snapshot, d, cycle, doc, at=_ago(age), timeout=5)
    store.close()

    dry = cli("snapshots", "prune", "--older-than", "30d", "--dry-run", "--config", str(cfg))
    assert dry.returncode == 0 and "would delete 1 snapshots" in dry.stdout, dry.stderr
    assert len(list(open_readonly(d).query("SELECT id FROM snapshots"))) == 3

    out = cli(
        "snapshots", "prune", "--older-than", "30d", "--compress-after", "7d", "--config", str(cfg)
    )
    assert out.returncode == 0, out.stderr
    db = open_readonly(d)
    rows = {r["cycle_id"]: r["path"] for r in db.query("SELECT cycle_id, path FROM snapshots")}
    assert set(rows) == {2, 3}  # the 40-day-old one is gone (file and row)
    assert rows[2].endswith(".json.gz") and rows[3].endswith(".json")
    assert load_snapshot(db, d, cycle_id=2)["cycle"] == 2  # compressed, hash still checked
    assert not list((d / "snapshots").rglob("cycle-00000001.json*"))
    assert cli("snapshots", "prune", "--config", str(cfg)).returncode == 2  # nothing asked


def test_backup_of_a_database_being_written_is_complete_and_consistent(tmp_path):
    cfg = write_config(tmp_path, 1)
    d = data(tmp_path)
    store = Store.open(d)
    store.call(log_safety_event, "test", "before", "x", timeout=5)
    stop = threading.Event()

    def writer() -> None:  # the daemon keeps writing while the backup runs
        while not stop.is_set():
            store.post(log_safety_event, "test", "during", "y")
            stop.wait(0.001)

    t = threading.Thread(target=writer)
    t.start()
    try:
        out = cli("backup", str(tmp_path / "copy.sqlite3"), "--config", str(cfg))
    finally:
        stop.set()
        t.join()
        store.close()
    assert out.returncode == 0 and "integrity ok" in out.stdout, out.stderr
    copy = sqlite3.connect(tmp_path / "copy.sqlite3")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT COUNT(*) FROM safety_events WHERE kind='before'").fetchone()[0]
    again = cli("backup", str(tmp_path / "copy.sqlite3"), "--config", str(cfg))
    assert again.returncode == 2 and "exists" in again.stderr


def test_backup_to_a_path_ending_in_a_slash_makes_the_folder_and_a_dated_file_every_day(tmp_path):
    cfg = write_config(tmp_path, 1)
    d = data(tmp_path)
    Store.open(d).close(5)
    folder = tmp_path / "backups" / "ib-swarm"  # neither exists yet: created, parents too
    out = cli("backup", f"{folder}/", "--config", str(cfg))
    assert out.returncode == 0 and "integrity ok" in out.stdout, out.stderr
    assert folder.is_dir()
    [first] = folder.iterdir()
    assert first.name.startswith("trading-") and first.suffix == ".sqlite3"
    # the next day's job (or one in the same second): a new dated file, never "exists"
    second = backup_database(d, folder)
    assert second.parent == folder and second != first
    for copy in (first, second):
        assert sqlite3.connect(copy).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        backup_database(d, f"{tmp_path / 'a-file'}/")
