"""The SQLite audit trail and the decision snapshot store."""

from .db import SCHEMA_VERSION, open_db, transaction, utc_now
from .redact import RedactingFilter, redact, register_secret
from .snapshots import SnapshotError, list_snapshots, load_snapshot, save_snapshot
from .trail import (
    finish_cycle,
    get_intent,
    insert_intent,
    log_account_snapshot,
    log_safety_event,
    log_trade,
    open_intents,
    query_safety_events,
    query_trades,
    record_order_event,
    set_commission,
    start_cycle,
    update_intent,
)

__all__ = [
    "SCHEMA_VERSION",
    "RedactingFilter",
    "SnapshotError",
    "finish_cycle",
    "get_intent",
    "insert_intent",
    "list_snapshots",
    "load_snapshot",
    "log_account_snapshot",
    "log_safety_event",
    "log_trade",
    "open_db",
    "open_intents",
    "query_safety_events",
    "query_trades",
    "record_order_event",
    "redact",
    "register_secret",
    "save_snapshot",
    "set_commission",
    "start_cycle",
    "transaction",
    "update_intent",
    "utc_now",
]
