"""The data lake: the only package that talks to SQLite.

`Store` (one writer thread and one reader thread per process) is how the daemon and the
watchdog write and read; `open_readonly` is how the CLI reads. The repository modules
(`trail`, `orders`, `executions`, `llm`, `snapshots`, `breaker_log`, `reports`,
`alerts`) hold every
SQL statement of the project behind named functions.
"""

from . import _lean  # noqa: F401  (first: sqlite_utils without numpy; see _lean)
from .alerts import (
    alert_cursor,
    breaker_transitions_after,
    latest_account,
    llm_today,
    metrics_figures,
    reject_streak,
    safety_events_after,
    schema_ready,
)
from .breaker_log import breaker_history, record_breaker_transition
from .db import (
    DB_FILENAME,
    SCHEMA_VERSION,
    Database,
    DatabaseError,
    DataLakeMissing,
    db_path,
    open_readonly,
    stamped,
    utc_now,
)
from .errors import DiscardOutput, HaltAndAlert, RefuseToStart, RetryLater, TraderError
from .executions import known_exec_ids, log_trade, query_trades, set_commission
from .llm import record_llm_calls, record_signals, spent_since
from .orders import (
    DONE_BROKER_STATES,
    IntentStatus,
    get_intent,
    insert_intent,
    intent_status_for,
    intents_exist,
    intents_sent_since,
    intents_to_reconcile,
    open_intents,
    record_order_event,
    resolve_intent,
    unresolved_intents,
    update_intent,
)
from .redact import RedactingFilter, redact, redacting_excepthook, register_secret
from .reports import (
    cycle_rows,
    cycles_finished,
    demo_summary,
    list_orders,
    list_safety_events,
    llm_usage,
    resolve_ref,
    status_summary,
    trade_chain,
    working_orders,
)
from .retention import backup_database, compress_snapshots, prune_snapshots
from .snapshots import SnapshotError, list_snapshots, load_snapshot, save_snapshot
from .store import StorageUnavailable, Store
from .trail import (
    finish_cycle,
    insert_cycle,
    last_cycle_id,
    last_safety_event,
    log_account_snapshot,
    log_safety_event,
    query_safety_events,
    record_decisions,
)

__all__ = [
    "DB_FILENAME",
    "DONE_BROKER_STATES",
    "SCHEMA_VERSION",
    "DataLakeMissing",
    "Database",
    "DatabaseError",
    "DiscardOutput",
    "HaltAndAlert",
    "IntentStatus",
    "RedactingFilter",
    "RefuseToStart",
    "RetryLater",
    "SnapshotError",
    "StorageUnavailable",
    "Store",
    "TraderError",
    "alert_cursor",
    "backup_database",
    "breaker_history",
    "breaker_transitions_after",
    "compress_snapshots",
    "cycle_rows",
    "cycles_finished",
    "db_path",
    "demo_summary",
    "finish_cycle",
    "get_intent",
    "insert_cycle",
    "insert_intent",
    "intent_status_for",
    "intents_exist",
    "intents_sent_since",
    "intents_to_reconcile",
    "known_exec_ids",
    "last_cycle_id",
    "last_safety_event",
    "latest_account",
    "list_orders",
    "list_safety_events",
    "list_snapshots",
    "llm_today",
    "llm_usage",
    "load_snapshot",
    "log_account_snapshot",
    "log_safety_event",
    "log_trade",
    "metrics_figures",
    "open_intents",
    "open_readonly",
    "prune_snapshots",
    "query_safety_events",
    "query_trades",
    "record_breaker_transition",
    "record_decisions",
    "record_llm_calls",
    "record_order_event",
    "record_signals",
    "redact",
    "redacting_excepthook",
    "register_secret",
    "reject_streak",
    "resolve_intent",
    "resolve_ref",
    "safety_events_after",
    "save_snapshot",
    "schema_ready",
    "set_commission",
    "spent_since",
    "stamped",
    "status_summary",
    "trade_chain",
    "unresolved_intents",
    "update_intent",
    "utc_now",
    "working_orders",
]
