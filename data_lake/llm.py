"""LLM calls (every request that reached the API, with usage and cost) and parsed signals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlite_utils import Database

from .contract import with_contract_columns
from .db import stamped, utc_now
from .redact import redact

__all__ = ["record_llm_calls", "record_signals", "spent_since"]

_CALL_COLUMNS = (
    "cycle_id",
    "instance_id",
    "provider",
    "model",
    "status",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "latency_ms",
    "error",
)
_SIGNAL_COLUMNS = (
    "cycle_id",
    "instance_id",
    "provider",
    "status",
    "reason",
    "symbol",
    "action",
    "sec_type",
    "expiry",
    "strike",
    "opt_right",
    "order_type",
    "limit_price",
    "quantity",
    "confidence",
    "win_probability",
    "payoff_ratio",
    "rationale",
    "model",
    "template_hash",
    "params_hash",
    "prompt_hash",
)


def _insert(
    db: Database, table: str, columns: Sequence[str], row: Mapping[str, Any], at: str
) -> None:
    """Insert the row's given columns (the others keep their defaults)."""
    row = with_contract_columns(row)
    unknown = set(row) - set(columns)
    if unknown:
        raise ValueError(f"{table}: unknown columns {sorted(unknown)}")
    values = {c: row[c] for c in columns if c in row}
    for text in ("error", "reason", "rationale"):
        if values.get(text) is not None:
            values[text] = redact(values[text])
    values["created_at"] = at
    cols = ", ".join(values)
    marks = ", ".join(f":{c}" for c in values)
    db.conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", values)


@stamped
def record_llm_calls(
    db: Database, calls: Sequence[Mapping[str, Any]], at: str | None = None
) -> None:
    """Store LLM calls (one row each: status, tokens, cost, latency, error)."""
    now = at or utc_now()
    for call in calls:
        _insert(db, "llm_calls", _CALL_COLUMNS, call, now)


@stamped
def record_signals(
    db: Database, signals: Sequence[Mapping[str, Any]], at: str | None = None
) -> None:
    """Store parsed signals and abstentions (status 'valid' or 'abstain')."""
    now = at or utc_now()
    for signal in signals:
        _insert(db, "signals", _SIGNAL_COLUMNS, signal, now)


def spent_since(db: Database, since: str) -> float:
    """Return what LLM calls recorded at or after `since` (ISO time) cost, in USD."""
    row = next(
        iter(
            db.query(
                "SELECT COALESCE(SUM(cost_usd), 0) AS c FROM llm_calls WHERE created_at >= ?",
                [since],
            )
        )
    )
    return float(row["c"])
