"""The audit trail: intents, orders, executions, safety events, cycles, account snapshots.

Every write is small and atomic. Executions are unique by execId, so a replayed or duplicated
report is recorded once. Nothing here raises for a duplicate; callers learn from the result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlite_utils import Database

from .db import transaction, utc_now
from .redact import redact

__all__ = [
    "INTENT_OPEN_STATES",
    "finish_cycle",
    "get_intent",
    "insert_intent",
    "log_account_snapshot",
    "log_safety_event",
    "log_trade",
    "open_intents",
    "query_safety_events",
    "query_trades",
    "record_order_event",
    "set_commission",
    "start_cycle",
    "update_intent",
]

INTENT_OPEN_STATES = ("pending", "submitted")
_INTENT_TERMINAL = {
    "Filled": "filled",
    "Cancelled": "cancelled",
    "ApiCancelled": "cancelled",
    "Inactive": "rejected",
}


def log_trade(db: Database, execution: Mapping[str, Any]) -> bool:
    """Record one execution; return False when its exec_id was already recorded."""
    row = {**execution, "recorded_at": utc_now()}
    cols = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    cur = db.conn.execute(f"INSERT OR IGNORE INTO executions ({cols}) VALUES ({marks})", row)
    return cur.rowcount == 1


def set_commission(
    db: Database, exec_id: str, commission: float, realized_pnl: float | None
) -> None:
    db.conn.execute(
        "UPDATE executions SET commission = ?, realized_pnl = ? WHERE exec_id = ?",
        (commission, realized_pnl, exec_id),
    )


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


def log_safety_event(
    db: Database,
    source: str,
    kind: str,
    reason: str,
    severity: str = "warning",
    details: Mapping[str, Any] | None = None,
    order_ref: str | None = None,
    cycle_id: int | None = None,
) -> int:
    """Record a safety event (refusal, trip, reconcile finding, ...) and return its id."""
    cur = db.conn.execute(
        "INSERT INTO safety_events (at, source, kind, severity, reason, details, order_ref, "
        "cycle_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            utc_now(),
            source,
            kind,
            severity,
            redact(reason),
            json.dumps(redact(dict(details or {})), default=str),
            order_ref,
            cycle_id,
        ),
    )
    return int(cur.lastrowid or 0)


def query_safety_events(
    db: Database, kind: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    sql = "SELECT * FROM safety_events"
    args: list[Any] = []
    if kind:
        sql += " WHERE kind = ?"
        args.append(kind)
    return list(db.query(sql + " ORDER BY id LIMIT ?", [*args, limit]))


def insert_intent(db: Database, intent: Mapping[str, Any]) -> bool:
    """Store an order intent before it is sent; False when its order_ref already exists."""
    now = utc_now()
    row = {"status": "pending", **intent, "created_at": now, "updated_at": now}
    cols = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    with transaction(db) as conn:
        cur = conn.execute(f"INSERT OR IGNORE INTO order_intents ({cols}) VALUES ({marks})", row)
        return cur.rowcount == 1


def update_intent(db: Database, order_ref: str, **fields: Any) -> None:
    fields["updated_at"] = utc_now()
    sets = ", ".join(f"{k} = :{k}" for k in fields)
    db.conn.execute(
        f"UPDATE order_intents SET {sets} WHERE order_ref = :order_ref",
        {**fields, "order_ref": order_ref},
    )


def get_intent(db: Database, order_ref: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM order_intents WHERE order_ref = ?", [order_ref]))
    return rows[0] if rows else None


def open_intents(db: Database) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in INTENT_OPEN_STATES)
    return list(
        db.query(
            f"SELECT * FROM order_intents WHERE status IN ({marks}) ORDER BY id",
            list(INTENT_OPEN_STATES),
        )
    )


def record_order_event(
    db: Database,
    *,
    order_ref: str | None,
    perm_id: int | None,
    order_id: int | None,
    client_id: int | None,
    status: str | None,
    filled: float | None = None,
    remaining: float | None = None,
    avg_fill_price: float | None = None,
    error_code: int | None = None,
    message: str | None = None,
    order: Mapping[str, Any] | None = None,
) -> None:
    """Append an order status (or error) event, keep the orders row and the intent current."""
    now = utc_now()
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO order_events (order_ref, perm_id, order_id, client_id, status, filled,"
            " remaining, avg_fill_price, error_code, message, at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                order_ref,
                perm_id,
                order_id,
                client_id,
                status,
                filled,
                remaining,
                avg_fill_price,
                error_code,
                redact(message) if message else None,
                now,
            ),
        )
        if perm_id and status:
            extra = dict(order or {})
            conn.execute(
                "INSERT INTO orders (perm_id, order_ref, client_id, order_id, symbol, sec_type,"
                " action, quantity, order_type, limit_price, status, filled, remaining,"
                " avg_fill_price, updated_at) VALUES (:perm_id, :order_ref, :client_id,"
                " :order_id, :symbol, :sec_type, :action, :quantity, :order_type, :limit_price,"
                " :status, :filled, :remaining, :avg_fill_price, :now)"
                " ON CONFLICT(perm_id) DO UPDATE SET status = excluded.status,"
                " filled = excluded.filled, remaining = excluded.remaining,"
                " avg_fill_price = excluded.avg_fill_price, updated_at = excluded.updated_at",
                {
                    "perm_id": perm_id,
                    "order_ref": order_ref,
                    "client_id": client_id,
                    "order_id": order_id,
                    "status": status,
                    "filled": filled or 0.0,
                    "remaining": remaining,
                    "avg_fill_price": avg_fill_price,
                    "now": now,
                    "symbol": extra.get("symbol"),
                    "sec_type": extra.get("sec_type"),
                    "action": extra.get("action"),
                    "quantity": extra.get("quantity"),
                    "order_type": extra.get("order_type"),
                    "limit_price": extra.get("limit_price"),
                },
            )
        if order_ref and status:
            new = _INTENT_TERMINAL.get(status, "submitted")
            conn.execute(
                "UPDATE order_intents SET status = ?, perm_id = COALESCE(?, perm_id),"
                " broker_order_id = COALESCE(?, broker_order_id), filled = COALESCE(?, filled),"
                " avg_fill_price = COALESCE(?, avg_fill_price), updated_at = ?"
                " WHERE order_ref = ? AND status NOT IN ('filled', 'cancelled', 'rejected')",
                (new, perm_id or None, order_id, filled, avg_fill_price or None, now, order_ref),
            )
        elif order_ref and error_code is not None:
            conn.execute(
                "UPDATE order_intents SET last_error = ?, updated_at = ? WHERE order_ref = ?",
                (f"{error_code}: {message}", now, order_ref),
            )


def start_cycle(db: Database, pid: int | None = None) -> int:
    cur = db.conn.execute("INSERT INTO cycles (started_at, pid) VALUES (?, ?)", (utc_now(), pid))
    return int(cur.lastrowid or 0)


def finish_cycle(
    db: Database, cycle_id: int, status: str, error: str | None = None, **counts: int
) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in counts)
    db.conn.execute(
        f"UPDATE cycles SET finished_at = :at, status = :status, error = :error"
        f"{', ' + sets if sets else ''} WHERE id = :id",
        {"at": utc_now(), "status": status, "error": redact(error), "id": cycle_id, **counts},
    )


def log_account_snapshot(
    db: Database,
    source: str,
    account: str,
    values: Mapping[str, float],
    positions: Iterable[Mapping[str, Any]],
) -> None:
    now = utc_now()
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO account_snapshots (at, source, account, net_liquidation, cash,"
            " gross_position_value, unrealized_pnl, realized_pnl, daily_pnl, raw)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                now,
                source,
                account,
                values.get("NetLiquidation"),
                values.get("TotalCashValue"),
                values.get("GrossPositionValue"),
                values.get("UnrealizedPnL"),
                values.get("RealizedPnL"),
                values.get("DailyPnL"),
                json.dumps(dict(values)),
            ),
        )
        for p in positions:
            conn.execute(
                "INSERT INTO position_snapshots (at, source, account, con_id, symbol, sec_type,"
                " expiry, strike, opt_right, quantity, avg_cost) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    now,
                    source,
                    account,
                    p.get("con_id"),
                    p["symbol"],
                    p["sec_type"],
                    p.get("expiry"),
                    p.get("strike"),
                    p.get("opt_right"),
                    p["quantity"],
                    p.get("avg_cost"),
                ),
            )
