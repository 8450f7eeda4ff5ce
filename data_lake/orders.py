"""Order intents (stored before an order is sent), order status events, and the orders table.

The intent's `order_ref` is deterministic and unique: the idempotency key that reconciliation
matches against the broker. Statuses are `IntentStatus`; the broker's order statuses map to
them in one place (`intent_status_for`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

from sqlite_utils import Database

from .contract import with_contract_columns
from .db import stamped, utc_now
from .redact import redact

__all__ = [
    "DONE_BROKER_STATES",
    "IntentStatus",
    "get_intent",
    "insert_intent",
    "intent_status_for",
    "intents_exist",
    "intents_sent_since",
    "intents_to_reconcile",
    "open_intents",
    "record_order_event",
    "resolve_intent",
    "unresolved_intents",
    "update_intent",
]


class IntentStatus(enum.StrEnum):
    PENDING = "pending"  # stored, not yet handed to the broker
    SUBMITTED = "submitted"  # handed to the broker, working
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # the broker refused it (the code is in last_error)
    NOT_SENT = "not_sent"  # never reached the broker
    UNRESOLVED = "unresolved"  # the broker does not know it and it was sent: a person decides


OPEN_INTENT_STATES = (IntentStatus.PENDING, IntentStatus.SUBMITTED)
FINAL_INTENT_STATES = (
    IntentStatus.FILLED,
    IntentStatus.CANCELLED,
    IntentStatus.REJECTED,
    IntentStatus.NOT_SENT,
)
# Final by the broker's word: a later broker status never changes them. (`not_sent` is our
# own belief; when the broker reports the order after all, the broker is right.)
BROKER_FINAL_STATES = (IntentStatus.FILLED, IntentStatus.CANCELLED, IntentStatus.REJECTED)
# Reached the broker (or may have): counted by the gate's rate limits after a restart.
SENT_INTENT_STATES = (
    IntentStatus.SUBMITTED,
    IntentStatus.FILLED,
    IntentStatus.CANCELLED,
    IntentStatus.REJECTED,
    IntentStatus.UNRESOLVED,
)
# The broker's terminal order states (ib_insync's OrderStatus.DoneStates plus Inactive).
DONE_BROKER_STATES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
_BROKER_TO_INTENT = {
    "Filled": IntentStatus.FILLED,
    "Cancelled": IntentStatus.CANCELLED,
    "ApiCancelled": IntentStatus.CANCELLED,
    "Inactive": IntentStatus.REJECTED,
}


def intent_status_for(broker_status: str) -> IntentStatus:
    """Map an IB order status to an intent status (anything not final is `submitted`)."""
    return _BROKER_TO_INTENT.get(broker_status, IntentStatus.SUBMITTED)


@stamped
def insert_intent(db: Database, intent: Mapping[str, Any], at: str | None = None) -> bool:
    """Store an order intent before it is sent; False when its order_ref already exists."""
    now = at or utc_now()
    row = {
        "status": IntentStatus.PENDING.value,
        **with_contract_columns(intent),
        "created_at": now,
        "updated_at": now,
    }
    cols = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    cur = db.conn.execute(f"INSERT OR IGNORE INTO order_intents ({cols}) VALUES ({marks})", row)
    return cur.rowcount == 1


@stamped
def update_intent(db: Database, order_ref: str, at: str | None = None, **fields: Any) -> None:
    """Set fields of a stored intent (by orderRef)."""
    fields["updated_at"] = at or utc_now()
    if isinstance(fields.get("status"), IntentStatus):
        fields["status"] = fields["status"].value
    sets = ", ".join(f"{k} = :{k}" for k in fields)
    db.conn.execute(
        f"UPDATE order_intents SET {sets} WHERE order_ref = :order_ref",
        {**fields, "order_ref": order_ref},
    )


def get_intent(db: Database, order_ref: str) -> dict[str, Any] | None:
    """Return one intent by orderRef, or None."""
    rows = list(db.query("SELECT * FROM order_intents WHERE order_ref = ?", [order_ref]))
    return rows[0] if rows else None


def open_intents(db: Database, sources: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Return intents that are pending or submitted (optionally of some sources), oldest first."""
    states = [s.value for s in OPEN_INTENT_STATES]
    sql = f"SELECT * FROM order_intents WHERE status IN ({', '.join('?' for _ in states)})"
    args: list[Any] = list(states)
    if sources is not None:
        wanted = list(sources)
        sql += f" AND source IN ({', '.join('?' for _ in wanted)})"
        args += wanted
    return list(db.query(sql + " ORDER BY id", args))


def intents_to_reconcile(
    db: Database, sources: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Return intents whose broker state is not settled: pending, submitted or unresolved."""
    states = [s.value for s in (*OPEN_INTENT_STATES, IntentStatus.UNRESOLVED)]
    sql = f"SELECT * FROM order_intents WHERE status IN ({', '.join('?' for _ in states)})"
    args: list[Any] = list(states)
    if sources is not None:
        wanted = list(sources)
        sql += f" AND source IN ({', '.join('?' for _ in wanted)})"
        args += wanted
    return list(db.query(sql + " ORDER BY id", args))


def unresolved_intents(db: Database) -> list[dict[str, Any]]:
    """Return the intents marked unresolved (sent, unknown to the broker), oldest first."""
    return list(
        db.query(
            "SELECT * FROM order_intents WHERE status = ? ORDER BY id",
            [IntentStatus.UNRESOLVED.value],
        )
    )


def intents_sent_since(
    db: Database, since: str, sources: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Return intents created at or after `since` (ISO UTC) that reached (or may have
    reached) the broker, oldest first: what the gate's rate limits count."""
    states = [s.value for s in SENT_INTENT_STATES]
    sql = (
        "SELECT order_ref, source, symbol, sec_type, expiry, strike, opt_right, action,"
        " quantity, status, created_at FROM order_intents WHERE created_at >= ?"
        f" AND status IN ({', '.join('?' for _ in states)})"
    )
    args: list[Any] = [since, *states]
    if sources is not None:
        wanted = list(sources)
        sql += f" AND source IN ({', '.join('?' for _ in wanted)})"
        args += wanted
    return list(db.query(sql + " ORDER BY id", args))


@stamped
def resolve_intent(
    db: Database,
    order_ref: str,
    status: IntentStatus,
    by: str,
    reason: str,
    at: str | None = None,
) -> bool:
    """A person resolves an unresolved intent; False when it is not unresolved."""
    cur = db.conn.execute(
        "UPDATE order_intents SET status = ?, last_error = ?, updated_at = ?"
        " WHERE order_ref = ? AND status = ?",
        (
            status.value,
            redact(f"resolved by {by}: {reason}"),
            at or utc_now(),
            order_ref,
            IntentStatus.UNRESOLVED.value,
        ),
    )
    return cur.rowcount == 1


def intents_exist(db: Database, order_refs: Iterable[str]) -> set[str]:
    """Return which of these orderRefs have a stored intent."""
    refs = list(order_refs)
    found: set[str] = set()
    for i in range(0, len(refs), 500):
        chunk = refs[i : i + 500]
        marks = ", ".join("?" for _ in chunk)
        found.update(
            r["order_ref"]
            for r in db.query(
                f"SELECT order_ref FROM order_intents WHERE order_ref IN ({marks})", chunk
            )
        )
    return found


@stamped
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
    rejected: bool = False,
    at: str | None = None,
) -> None:
    """Append an order status (or error) event, keep the orders row and the intent current.

    `rejected` marks an error that ends the order (a broker reject): the intent becomes
    `rejected` with the code, not `cancelled`."""
    now = at or utc_now()
    conn = db.conn
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
    final = tuple(s.value for s in BROKER_FINAL_STATES)
    if order_ref and status:
        new = intent_status_for(status)
        conn.execute(
            "UPDATE order_intents SET status = ?, perm_id = COALESCE(?, perm_id),"
            " broker_order_id = COALESCE(?, broker_order_id), filled = COALESCE(?, filled),"
            " avg_fill_price = COALESCE(?, avg_fill_price), updated_at = ?"
            f" WHERE order_ref = ? AND status NOT IN ({', '.join('?' for _ in final)})",
            (
                new.value,
                perm_id or None,
                order_id,
                filled,
                avg_fill_price or None,
                now,
                order_ref,
                *final,
            ),
        )
    elif order_ref and error_code is not None:
        if rejected:  # more specific than the "Cancelled" status IB may send first
            conn.execute(
                "UPDATE order_intents SET status = ?, last_error = ?, updated_at = ?"
                " WHERE order_ref = ? AND status != ?",
                (
                    IntentStatus.REJECTED.value,
                    f"{error_code}: {message}",
                    now,
                    order_ref,
                    IntentStatus.FILLED.value,
                ),
            )
        else:
            conn.execute(
                "UPDATE order_intents SET last_error = ?, updated_at = ? WHERE order_ref = ?",
                (f"{error_code}: {message}", now, order_ref),
            )
