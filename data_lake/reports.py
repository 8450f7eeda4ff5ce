"""Read models for people and for the loop: status, summaries, working orders.

Every query the CLI, the demo, the benchmarks and the commander need lives here, so no other
package writes SQL.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlite_utils import Database

from .orders import OPEN_INTENT_STATES

__all__ = [
    "alike_note",
    "child_intents",
    "closes_lifting_protection",
    "cycle_rows",
    "cycles_finished",
    "demo_summary",
    "grouped_reasons",
    "list_orders",
    "list_safety_events",
    "llm_usage",
    "price_words",
    "reason_line",
    "reason_shape",
    "resolve_ref",
    "safety_events_between",
    "status_summary",
    "trade_chain",
    "working_orders",
]


def _one(db: Database, sql: str, params: list[Any] | None = None) -> dict[str, Any] | None:
    rows = list(db.query(sql, params or []))
    return rows[0] if rows else None


def _count(db: Database, sql: str, params: list[Any] | None = None) -> int:
    row = _one(db, sql, params)
    return int(row["n"]) if row else 0


def cycles_finished(db: Database) -> int:
    """Return how many cycles have finished (any outcome)."""
    return _count(db, "SELECT COUNT(*) AS n FROM cycles WHERE finished_at IS NOT NULL")


def cycle_rows(db: Database) -> list[dict[str, Any]]:
    """Return every cycle's id, times and status, oldest first."""
    return list(db.query("SELECT id, started_at, finished_at, status FROM cycles ORDER BY id"))


def working_orders(db: Database, source: str) -> list[dict[str, Any]]:
    """Return the open (pending or submitted) intents of one source."""
    states = [s.value for s in OPEN_INTENT_STATES]
    return list(
        db.query(
            "SELECT order_ref, symbol, sec_type, expiry, strike, opt_right, action, quantity "
            f"FROM order_intents WHERE status IN ({', '.join('?' for _ in states)}) "
            "AND source = ? ORDER BY id",
            [*states, source],
        )
    )


def status_summary(db: Database, today: str) -> dict[str, Any]:
    """Return the figures `status` shows: last cycle, counts, today's spend, last account."""
    states = [s.value for s in OPEN_INTENT_STATES]
    return {
        "last_cycle": _one(
            db,
            "SELECT id, started_at, finished_at, status, error, n_signals, "
            "n_decisions, n_orders FROM cycles ORDER BY id DESC LIMIT 1",
        ),
        "cycles": _count(db, "SELECT COUNT(*) AS n FROM cycles"),
        "open_intents": _count(
            db,
            f"SELECT COUNT(*) AS n FROM order_intents WHERE status IN "
            f"({', '.join('?' for _ in states)})",
            states,
        ),
        "unresolved_intents": _count(
            db, "SELECT COUNT(*) AS n FROM order_intents WHERE status = 'unresolved'"
        ),
        "executions_today": _count(
            db, "SELECT COUNT(*) AS n FROM executions WHERE recorded_at >= ?", [today]
        ),
        "llm_usd_today": round(
            float(
                (
                    _one(
                        db,
                        "SELECT COALESCE(SUM(cost_usd), 0) AS c FROM llm_calls "
                        "WHERE created_at >= ?",
                        [today],
                    )
                    or {"c": 0}
                )["c"]
            ),
            6,
        ),
        "safety_events_today": _count(
            db, "SELECT COUNT(*) AS n FROM safety_events WHERE at >= ?", [today]
        ),
        "recent_cycles": list(
            db.query(
                "SELECT id, started_at, status, n_signals, n_decisions, n_orders, error "
                "FROM cycles ORDER BY id DESC LIMIT 5"
            )
        ),
        # alike reasons (other numbers) as one, shown by the latest example
        "refusals_today": _alike(
            db.query(
                "SELECT reason, COUNT(*) AS n FROM safety_events WHERE kind = 'gate_refusal' "
                "AND at >= ? GROUP BY reason ORDER BY MAX(id) DESC",
                [today],
            ),
            (),
        )[:10],
        "last_account": _one(
            db,
            "SELECT at, net_liquidation, cash, unrealized_pnl, realized_pnl, daily_pnl "
            "FROM account_snapshots ORDER BY id DESC LIMIT 1",
        ),
    }


_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def reason_shape(reason: str) -> str:
    """A reason with its numbers as '#': reasons that differ only in numbers (an order value
    of 49,508 or 49,506) have one shape."""
    return _NUMBER.sub("#", reason)


def grouped_reasons(reasons: Iterable[str]) -> list[dict[str, Any]]:
    """Reasons counted by their shape, each group shown by its first example with `n` and
    `variants` (how many different texts it holds); most frequent first."""
    return _alike(({"reason": r} for r in reasons), ())


def _alike(
    rows: Iterable[Mapping[str, Any]], keys: Sequence[str], texts: Sequence[str] = ("reason",)
) -> list[dict[str, Any]]:
    """Rows counted as one when `keys` agree and their `texts` differ only in numbers. A row
    that is itself a count (an `n` from GROUP BY) counts `n` times. Each group is its first
    row with `n` and `variants` (distinct texts), most frequent first."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    seen: dict[tuple[Any, ...], set[tuple[str, ...]]] = {}
    for row in rows:
        said = tuple(str(row[t]) if row[t] is not None else "" for t in texts)
        shape = (*(row[k] for k in keys), *(reason_shape(t) for t in said))
        g = groups.setdefault(shape, {**row, "n": 0})
        g["n"] += int(row.get("n", 1))
        seen.setdefault(shape, set()).add(said)
        g["variants"] = len(seen[shape])
    return sorted(groups.values(), key=lambda g: -int(g["n"]))


def alike_note(group: Mapping[str, Any]) -> str:
    """'' for a group of one text; else that the text shown is an example (its variants
    differ only in numbers)."""
    variants = int(group.get("variants", 1))
    return (
        f"  (an example of {variants} variants differing only in numbers)" if variants > 1 else ""
    )


def price_words(limit_price: float | None, aux_price: float | None) -> str:
    """An order's prices as its type reads them: ' trigger 406.69' (STP), ' trigger 406.69
    limit 406.5' (STP LMT), ' @ 410' (LMT), or '' (MKT)."""
    if aux_price:
        return f" trigger {aux_price:g}" + (f" limit {limit_price:g}" if limit_price else "")
    return f" @ {limit_price:g}" if limit_price else ""


def reason_line(group: Mapping[str, Any], width: int = 100) -> str:
    """'N x REASON' for a group of alike reasons, saying when REASON is an example."""
    return f"{group['n']:3} x {str(group['reason'])[:width]}{alike_note(group)}"


# The gate's refusal of decision `d`'s order: its cycle's refusal of the same contract and
# side (a refused order has no intent; its refusal names the cycle and the request).
_REFUSAL_OF_DECISION = (
    "SELECT e.reason FROM safety_events e WHERE e.kind = 'gate_refusal' "
    "AND e.cycle_id = d.cycle_id "
    "AND json_extract(e.details, '$.request.symbol') = d.symbol "
    "AND json_extract(e.details, '$.request.action') = d.action "
    "AND COALESCE(json_extract(e.details, '$.request.sec_type'), 'STK') = d.sec_type "
    "AND COALESCE(json_extract(e.details, '$.request.expiry'), '') = COALESCE(d.expiry, '') "
    "AND COALESCE(json_extract(e.details, '$.request.strike'), 0) = COALESCE(d.strike, 0) "
    "AND COALESCE(json_extract(e.details, '$.request.right'), '') = COALESCE(d.opt_right, '') "
    "ORDER BY e.id LIMIT 1"
)


def demo_summary(db: Database) -> dict[str, Any]:
    """Return what the demo prints at the end: cycles, swarm, decisions, refusals, orders."""
    return {
        "cycles": Counter(r["status"] for r in db.query("SELECT status FROM cycles")),
        "swarm": list(
            db.query(
                "SELECT instance_id, provider, SUM(status = 'valid') AS valid, "
                "SUM(status = 'abstain') AS abstain FROM signals GROUP BY instance_id"
            )
        ),
        # each decision with the gate's verdict on it: the status of the order it sent (the
        # parent's, not a protective child's), else the gate's refusal of that contract and
        # side in its cycle (both NULL: no verdict recorded)
        "decisions": _alike(
            db.query(
                "SELECT d.symbol, d.sec_type, d.expiry, d.strike, d.opt_right, d.action, "
                f"d.reason, i.status AS sent, ({_REFUSAL_OF_DECISION}) AS refused "
                "FROM decisions d "
                "LEFT JOIN order_intents i ON i.decision_id = d.id AND i.parent_ref IS NULL "
                "ORDER BY d.id"
            ),
            ("symbol", "sec_type", "expiry", "strike", "opt_right", "action", "sent"),
            ("reason", "refused"),
        ),
        "orders": list(
            db.query(
                "SELECT order_ref, symbol, sec_type, expiry, strike, opt_right, action, quantity, "
                "order_type, limit_price, aux_price, status FROM order_intents ORDER BY id"
            )
        ),
        "refusals": grouped_reasons(
            r["reason"]
            for r in db.query("SELECT reason FROM safety_events WHERE kind = 'gate_refusal'")
        ),
        "intents": Counter(r["status"] for r in db.query("SELECT status FROM order_intents")),
        "events": list(
            db.query(
                "SELECT kind, COUNT(*) AS n FROM safety_events WHERE kind != 'gate_refusal' "
                "GROUP BY kind"
            )
        ),
    }


def resolve_ref(db: Database, ref: str) -> str | None:
    """Return the orderRef a person means by REF: an orderRef, an execId, or an order id
    (ours or the broker's permanent id)."""
    if _one(db, "SELECT 1 AS x FROM order_intents WHERE order_ref = ?", [ref]):
        return ref
    row = _one(db, "SELECT order_ref FROM executions WHERE exec_id = ?", [ref])
    if row and row["order_ref"]:
        return str(row["order_ref"])
    if ref.isdigit():
        n = int(ref)
        for sql in (
            "SELECT order_ref FROM order_intents WHERE broker_order_id = ? OR perm_id = ? "
            "ORDER BY id DESC LIMIT 1",
            "SELECT order_ref FROM orders WHERE order_id = ? OR perm_id = ? LIMIT 1",
        ):
            row = _one(db, sql, [n, n])
            if row and row["order_ref"]:
                return str(row["order_ref"])
    # an order the gate refused: never an intent, but its refusal carries the orderRef
    if _one(db, "SELECT 1 AS x FROM safety_events WHERE order_ref = ? LIMIT 1", [ref]):
        return ref
    return None


def trade_chain(db: Database, order_ref: str) -> dict[str, Any]:
    """Everything stored about one order, from its fills back to the signals behind it."""
    intent = _one(db, "SELECT * FROM order_intents WHERE order_ref = ?", [order_ref])
    decision = None
    signals: list[dict[str, Any]] = []
    snapshot = None
    cycle_id = intent["cycle_id"] if intent else None
    if intent and intent["decision_id"]:
        decision = _one(db, "SELECT * FROM decisions WHERE id = ?", [intent["decision_id"]])
    if intent is None:  # refused by the gate: the refusal names the cycle and the request
        refusal = _one(
            db,
            "SELECT cycle_id, details FROM safety_events WHERE order_ref = ? AND cycle_id IS "
            "NOT NULL ORDER BY id LIMIT 1",
            [order_ref],
        )
        if refusal:
            cycle_id = refusal["cycle_id"]
            request = json.loads(refusal["details"] or "{}").get("request") or {}
            if request.get("symbol") and request.get("action"):
                decision = _one(  # the cycle's decision for that contract and side
                    db,
                    "SELECT * FROM decisions WHERE cycle_id = ? AND symbol = ? AND action = ? "
                    "AND sec_type = ? AND COALESCE(expiry, '') = ? AND COALESCE(strike, 0) = ? "
                    "AND COALESCE(opt_right, '') = ? ORDER BY id LIMIT 1",
                    [
                        cycle_id,
                        request["symbol"],
                        request["action"],
                        request.get("sec_type") or "STK",
                        request.get("expiry") or "",
                        request.get("strike") or 0,
                        request.get("right") or "",
                    ],
                )
    if cycle_id is not None:
        snapshot = _one(
            db,
            "SELECT id, path, sha256, at FROM snapshots WHERE cycle_id = ? ORDER BY id DESC "
            "LIMIT 1",
            [cycle_id],
        )
    if decision:
        signals = list(
            db.query(
                "SELECT s.* FROM decision_signals ds JOIN signals s ON s.id = ds.signal_id "
                "WHERE ds.decision_id = ? ORDER BY s.id",
                [decision["id"]],
            )
        )
    return {
        "order_ref": order_ref,
        "executions": list(
            db.query(
                "SELECT * FROM executions WHERE order_ref = ? ORDER BY exec_time, exec_id",
                [order_ref],
            )
        ),
        "orders": list(db.query("SELECT * FROM orders WHERE order_ref = ?", [order_ref])),
        "order_events": list(
            db.query("SELECT * FROM order_events WHERE order_ref = ? ORDER BY id", [order_ref])
        ),
        "intent": intent,
        "safety_events": list(
            db.query("SELECT * FROM safety_events WHERE order_ref = ? ORDER BY id", [order_ref])
        ),
        "decision": decision,
        "signals": signals,
        "snapshot": snapshot,
        "cycle": _one(db, "SELECT * FROM cycles WHERE id = ?", [cycle_id])
        if cycle_id is not None
        else None,
    }


def child_intents(db: Database, parent_ref: str) -> list[dict[str, Any]]:
    """The stored intents of an order's protective children (stop first)."""
    return list(
        db.query("SELECT * FROM order_intents WHERE parent_ref = ? ORDER BY id", [parent_ref])
    )


def safety_events_between(
    db: Database, kinds: list[str], since: str, until: str
) -> list[dict[str, Any]]:
    """Safety events of these kinds recorded from `since` to `until` (ISO times), oldest
    first."""
    marks = ", ".join("?" for _ in kinds)
    return list(
        db.query(
            f"SELECT * FROM safety_events WHERE kind IN ({marks}) AND at >= ? AND at <= ? "
            "ORDER BY id",
            [*kinds, since, until],
        )
    )


def closes_lifting_protection(
    db: Database, intent: dict[str, Any], until: str
) -> list[dict[str, Any]]:
    """The commander's decisions, from the cycle of `intent` (a protective child) to
    `until`, to close its contract by signal after cancelling its protective orders."""
    return list(
        db.query(
            "SELECT * FROM decisions WHERE cycle_id >= ? AND created_at <= ? AND symbol = ? "
            "AND sec_type = ? AND COALESCE(expiry, '') = COALESCE(?, '') AND "
            "COALESCE(strike, 0) = COALESCE(?, 0) AND COALESCE(opt_right, '') = COALESCE(?, '') "
            "AND action = ? AND reason LIKE 'accepted: %' AND reason LIKE "
            "'%its protective orders are cancelled first' ORDER BY id",
            [
                intent["cycle_id"] or 0,
                until,
                intent["symbol"],
                intent["sec_type"],
                intent["expiry"],
                intent["strike"],
                intent["opt_right"],
                intent["action"],
            ],
        )
    )


def _filtered(
    db: Database,
    base: str,
    filters: list[tuple[str, Any]],
    order: str,
    limit: int,
) -> list[dict[str, Any]]:
    where = [clause for clause, value in filters if value is not None]
    args = [value for _, value in filters if value is not None]
    sql = base + (" WHERE " + " AND ".join(where) if where else "")
    return list(db.query(f"{sql} ORDER BY {order} LIMIT ?", [*args, limit]))


def list_orders(
    db: Database,
    *,
    status: str | None = None,
    symbol: str | None = None,
    source: str | None = None,
    since: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Order intents (newest first) with their status, filtered."""
    return _filtered(
        db,
        "SELECT id, created_at, order_ref, source, cycle_id, decision_id, symbol, sec_type, "
        "expiry, strike, opt_right, action, quantity, order_type, limit_price, aux_price, tif, "
        "status, filled, avg_fill_price, last_error FROM order_intents",
        [
            ("status = ?", status),
            ("symbol = ?", symbol),
            ("source = ?", source),
            ("created_at >= ?", since),
        ],
        "id DESC",
        limit,
    )


def list_safety_events(
    db: Database,
    *,
    kind: str | None = None,
    severity: str | None = None,
    source: str | None = None,
    since: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Safety events (newest first), filtered."""
    return _filtered(
        db,
        "SELECT id, at, source, kind, severity, reason, order_ref, cycle_id FROM safety_events",
        [
            ("kind = ?", kind),
            ("severity = ?", severity),
            ("source = ?", source),
            ("at >= ?", since),
        ],
        "id DESC",
        limit,
    )


def llm_usage(
    db: Database, *, instance: str | None = None, since: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """LLM calls, tokens and dollars per day and instance (newest day first), filtered."""
    return _filtered(
        db,
        "SELECT * FROM llm_spend_by_instance_day",
        [("instance_id = ?", instance), ("day >= ?", since[:10] if since else None)],
        "day DESC, cost_usd DESC",
        limit,
    )
