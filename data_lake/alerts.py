"""Read models for alerts and metrics: what a notifier tails and what a scrape reports.

Read-only queries (run on `open_readonly` connections by `runtime.notify` and
`runtime.metrics`, in their own threads): new safety events and breaker transitions after an
id, the reject streak, today's LLM spend, the latest account snapshot, and the counters a
Prometheus scrape exposes.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

__all__ = [
    "alert_cursor",
    "breaker_transitions_after",
    "latest_account",
    "llm_today",
    "metrics_figures",
    "reject_streak",
    "safety_events_after",
    "schema_ready",
]


def _scalar(db: Database, sql: str, params: list[Any] | None = None) -> Any:
    rows = list(db.query(sql, params or []))
    return next(iter(rows[0].values())) if rows else None


def schema_ready(db: Database) -> bool:
    """Return whether the database has its schema yet (a file being created has not)."""
    return int(db.conn.execute("PRAGMA user_version").fetchone()[0]) > 0


def alert_cursor(db: Database) -> dict[str, int]:
    """Return the newest safety event and breaker transition ids (0 for empty tables)."""
    return {
        "safety_id": int(_scalar(db, "SELECT COALESCE(MAX(id), 0) AS n FROM safety_events")),
        "breaker_id": int(_scalar(db, "SELECT COALESCE(MAX(id), 0) AS n FROM breaker_history")),
    }


def safety_events_after(db: Database, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
    """Return the safety events with an id above `after_id`, oldest first."""
    return list(
        db.query(
            "SELECT id, at, source, kind, severity, reason, order_ref, cycle_id "
            "FROM safety_events WHERE id > ? ORDER BY id LIMIT ?",
            [after_id, limit],
        )
    )


def breaker_transitions_after(
    db: Database, after_id: int, limit: int = 100
) -> list[dict[str, Any]]:
    """Return the breaker transitions with an id above `after_id`, oldest first."""
    return list(
        db.query(
            "SELECT id, at, from_state, to_state, source, actor, reason, generation "
            "FROM breaker_history WHERE id > ? ORDER BY id LIMIT ?",
            [after_id, limit],
        )
    )


def reject_streak(db: Database) -> int:
    """Return how many broker rejects were recorded since the last execution."""
    return int(
        _scalar(
            db,
            "SELECT COUNT(*) AS n FROM safety_events WHERE kind = 'order_reject' AND at > "
            "COALESCE((SELECT MAX(recorded_at) FROM executions), '')",
        )
    )


def latest_account(db: Database) -> dict[str, Any] | None:
    """Return the newest account snapshot (time, net liquidation, daily PnL), or None."""
    rows = list(
        db.query(
            "SELECT at, source, net_liquidation, daily_pnl, unrealized_pnl, realized_pnl "
            "FROM account_snapshots ORDER BY id DESC LIMIT 1"
        )
    )
    return rows[0] if rows else None


def llm_today(db: Database, since: str) -> dict[str, Any]:
    """Return what LLM calls recorded at or after `since` cost and how many were refused by
    the budget (status 'budget')."""
    row = next(
        iter(
            db.query(
                "SELECT COALESCE(SUM(cost_usd), 0) AS usd, COALESCE(SUM(status = 'budget'), 0) "
                "AS refused FROM llm_calls WHERE created_at >= ?",
                [since],
            )
        )
    )
    return {"usd": float(row["usd"]), "budget_refused": int(row["refused"])}


def metrics_figures(db: Database) -> dict[str, Any]:
    """Return the counters and sums a metrics scrape reports (all time, from the tables)."""
    seconds = "(julianday(finished_at) - julianday(started_at)) * 86400.0"
    return {
        "cycles": list(db.query("SELECT status, COUNT(*) AS n FROM cycles GROUP BY status")),
        "cycle_duration": next(
            iter(
                db.query(
                    f"SELECT COUNT(*) AS n, COALESCE(SUM({seconds}), 0) AS s FROM cycles "
                    "WHERE finished_at IS NOT NULL AND status != 'skipped'"
                )
            )
        ),
        "last_cycle": next(
            iter(
                db.query(
                    f"SELECT MAX(id) AS id, (SELECT {seconds} FROM cycles WHERE finished_at IS "
                    "NOT NULL ORDER BY id DESC LIMIT 1) AS s FROM cycles"
                )
            )
        ),
        "intents": list(
            db.query(
                "SELECT source, status, COUNT(*) AS n FROM order_intents GROUP BY source, status"
            )
        ),
        "executions": next(
            iter(
                db.query(
                    "SELECT COUNT(*) AS n, COALESCE(SUM(shares), 0) AS shares, "
                    "COALESCE(SUM(commission), 0) AS commission FROM executions"
                )
            )
        ),
        "refusals": list(
            db.query(
                "SELECT reason, COUNT(*) AS n FROM safety_events WHERE kind = 'gate_refusal' "
                "GROUP BY reason"
            )
        ),
        "safety_events": list(
            db.query(
                "SELECT kind, severity, COUNT(*) AS n FROM safety_events GROUP BY kind, severity"
            )
        ),
        "llm": list(
            db.query(
                "SELECT model, status, COUNT(*) AS calls, SUM(input_tokens) AS input, "
                "SUM(output_tokens) AS output, SUM(cache_read_tokens) AS cache_read, "
                "SUM(cache_write_tokens) AS cache_write, SUM(cost_usd) AS usd, "
                "COUNT(latency_ms) AS timed, COALESCE(SUM(latency_ms), 0) AS latency_ms "
                "FROM llm_calls GROUP BY model, status"
            )
        ),
        "account": latest_account(db),
    }
