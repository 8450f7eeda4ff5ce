"""The audit trail: safety events, cycles and their decisions, account snapshots.

Repository functions: each takes a `sqlite_utils.Database` first and runs inside the caller's
transaction (the store's writer wraps every job in BEGIN IMMEDIATE). Functions marked
`@stamped` take the event's time as `at`, filled in by `Store.post` when the event happens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlite_utils import Database

from .contract import with_contract_columns
from .db import stamped, utc_now
from .redact import redact

__all__ = [
    "finish_cycle",
    "insert_cycle",
    "last_cycle_id",
    "last_safety_event",
    "log_account_snapshot",
    "log_safety_event",
    "query_safety_events",
    "record_decisions",
]


@stamped
def log_safety_event(
    db: Database,
    source: str,
    kind: str,
    reason: str,
    severity: str = "warning",
    details: Mapping[str, Any] | None = None,
    order_ref: str | None = None,
    cycle_id: int | None = None,
    at: str | None = None,
) -> int:
    """Record a safety event (refusal, trip, reconcile finding, ...) and return its id."""
    cur = db.conn.execute(
        "INSERT INTO safety_events (at, source, kind, severity, reason, details, order_ref, "
        "cycle_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            at or utc_now(),
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
    """Return safety events, oldest first, optionally of one kind."""
    sql = "SELECT * FROM safety_events"
    args: list[Any] = []
    if kind:
        sql += " WHERE kind = ?"
        args.append(kind)
    return list(db.query(sql + " ORDER BY id LIMIT ?", [*args, limit]))


def last_safety_event(db: Database, kind: str) -> dict[str, Any] | None:
    """Return the newest safety event of one kind, or None."""
    rows = list(
        db.query("SELECT * FROM safety_events WHERE kind = ? ORDER BY id DESC LIMIT 1", [kind])
    )
    return rows[0] if rows else None


def last_cycle_id(db: Database) -> int:
    """Return the highest cycle id ever used (0 for a new database)."""
    row = next(iter(db.query("SELECT COALESCE(MAX(id), 0) AS n FROM cycles")))
    return int(row["n"])


@stamped
def insert_cycle(
    db: Database, cycle_id: int, pid: int | None = None, at: str | None = None
) -> None:
    """Record that a cycle started (its id is allocated by the main loop, not the database)."""
    db.conn.execute(
        "INSERT OR IGNORE INTO cycles (id, started_at, pid) VALUES (?, ?, ?)",
        (cycle_id, at or utc_now(), pid),
    )


@stamped
def finish_cycle(
    db: Database,
    cycle_id: int,
    status: str,
    error: str | None = None,
    at: str | None = None,
    **counts: int,
) -> None:
    """Record a cycle's outcome and its counts."""
    sets = ", ".join(f"{k} = :{k}" for k in counts)
    db.conn.execute(
        f"UPDATE cycles SET finished_at = :at, status = :status, error = :error"
        f"{', ' + sets if sets else ''} WHERE id = :id",
        {"at": at or utc_now(), "status": status, "error": redact(error), "id": cycle_id, **counts},
    )


@stamped
def record_decisions(
    db: Database, cycle_id: int, rows: Sequence[Mapping[str, Any]], at: str | None = None
) -> list[int]:
    """Store a cycle's commander decisions (accepted and refused, with their reasons and
    inputs); return their ids in order (intents carry them)."""
    ids: list[int] = []
    for row in rows:
        d = with_contract_columns(row)
        # the contract columns as stored; the signals behind it are matched on the same values
        # (a row with a Contract spells its right `opt_right`, a loose row may say `right`)
        expiry = d.get("expiry") or None
        strike = d.get("strike") or None
        opt_right = d.get("opt_right") or d.get("right") or None
        cur = db.conn.execute(
            "INSERT INTO decisions (cycle_id, symbol, action, sec_type, expiry, strike, "
            "opt_right, order_type, limit_price, quantity, reason, sources, created_at, "
            "kelly_fraction, inputs) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                cycle_id,
                d["symbol"],
                d["action"],
                d["sec_type"],
                expiry,
                strike,
                opt_right,
                d["order_type"],
                d.get("limit_price"),
                d["quantity"],
                d["reason"],
                json.dumps(list(d.get("sources", ()))),
                at or utc_now(),
                d.get("kelly_fraction"),
                json.dumps(dict(d.get("inputs") or {}), default=str),
            ),
        )
        decision_id = int(cur.lastrowid or 0)
        # the signals behind it, as foreign keys: its source instances' valid signals of
        # this cycle for the same contract and side (stored before the decision)
        db.conn.execute(
            "INSERT OR IGNORE INTO decision_signals (decision_id, signal_id) "
            "SELECT ?, s.id FROM signals s, json_each(?) j WHERE s.cycle_id = ? "
            "AND s.instance_id = j.value AND s.status = 'valid' AND s.symbol = ? "
            "AND s.action = ? AND s.sec_type = ? AND COALESCE(s.expiry, '') = ? "
            "AND COALESCE(s.strike, 0) = ? AND COALESCE(s.opt_right, '') = ?",
            (
                decision_id,
                json.dumps(list(d.get("sources", ()))),
                cycle_id,
                d["symbol"],
                d["action"],
                d["sec_type"],
                expiry or "",
                float(strike or 0),
                opt_right or "",
            ),
        )
        ids.append(decision_id)
    return ids


@stamped
def log_account_snapshot(
    db: Database,
    source: str,
    account: str,
    values: Mapping[str, float],
    positions: Iterable[Mapping[str, Any]],
    at: str | None = None,
) -> None:
    """Record the account's values and positions as one snapshot."""
    now = at or utc_now()
    db.conn.execute(
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
    for position in positions:
        p = with_contract_columns(position)
        db.conn.execute(
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
