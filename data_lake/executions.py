"""Executions: one row per execId, ever (replays and duplicates are ignored)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlite_utils import Database

from .contract import with_contract_columns
from .db import utc_now

__all__ = ["known_exec_ids", "log_trade", "query_trades", "set_commission"]


def log_trade(db: Database, execution: Mapping[str, Any]) -> bool:
    """Record one execution; return False when its exec_id was already recorded."""
    row = {**with_contract_columns(execution), "recorded_at": utc_now()}
    cols = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    cur = db.conn.execute(f"INSERT OR IGNORE INTO executions ({cols}) VALUES ({marks})", row)
    return cur.rowcount == 1


def set_commission(
    db: Database, exec_id: str, commission: float, realized_pnl: float | None
) -> None:
    """Attach a commission report to its execution."""
    db.conn.execute(
        "UPDATE executions SET commission = ?, realized_pnl = ? WHERE exec_id = ?",
        (commission, realized_pnl, exec_id),
    )


def known_exec_ids(db: Database, exec_ids: Iterable[str]) -> set[str]:
    """Return which of these execIds are already recorded."""
    ids = list(exec_ids)
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ", ".join("?" for _ in chunk)
        found.update(
            r["exec_id"]
            for r in db.query(f"SELECT exec_id FROM executions WHERE exec_id IN ({marks})", chunk)
        )
    return found


def query_trades(
    db: Database,
    symbol: str | None = None,
    order_ref: str | None = None,
    since: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Return executions, oldest first, optionally filtered by symbol, orderRef or time."""
    where, args = [], []
    for clause, value in (
        ("symbol = ?", symbol),
        ("order_ref = ?", order_ref),
        ("exec_time >= ?", since),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    sql = "SELECT * FROM executions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY exec_time, exec_id LIMIT ?"
    return list(db.query(sql, [*args, limit]))
