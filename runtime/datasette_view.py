"""`python -m runtime inspect`: the database in Datasette, read-only, with a guide.

Datasette opens a mutable SQLite file with `mode=ro` connections, so browsing a live trading
database never blocks or changes it. The metadata describes the tables and columns a trader
asks about, adds canned queries for the common questions (the views of schema v2) and links
that open them as charts (the datasette-vega plugin: equity over time, LLM spend per day).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["DB_NAME", "free_port", "metadata", "serve_args"]

DB_NAME = "trading"


def _chart(query: str, x: str, y: str, mark: str = "line", x_type: str = "temporal") -> str:
    fragment = (
        f"g.mark={mark}&g.x_column={quote(x)}&g.x_type={x_type}"
        f"&g.y_column={quote(y)}&g.y_type=quantitative"
    )
    return f'<a href="/{DB_NAME}/{query}#{fragment}">open as a chart</a>'


TABLES: dict[str, dict[str, Any]] = {
    "cycles": {
        "description": "One row per cycle of the main loop: when, outcome, counts.",
        "columns": {
            "status": "ok | skipped | error | timeout (cut at max_cycle_s) | interrupted (stop)",
            "error": "why the cycle was skipped or failed",
        },
    },
    "order_intents": {
        "description": "Every order the gate accepted, stored BEFORE it was sent; the "
        "orderRef is the idempotency key reconciliation matches at the broker.",
        "columns": {
            "order_ref": "deterministic reference sent to IB as orderRef",
            "status": "pending | submitted | filled | cancelled | rejected | not_sent | unresolved",
            "decision_id": "the commander decision behind it (decisions.id)",
            "source": "commander | watchdog | person",
        },
    },
    "executions": {
        "description": "Fills as IB reported them, exactly one row per execId.",
        "columns": {"side": "BOT or SLD", "realized_pnl": "from IB's commission report"},
    },
    "decisions": {
        "description": "The commander's decisions per cycle, accepted or refused with why.",
        "columns": {
            "inputs": "JSON: the sizing inputs (confidence, consensus, win probability, ...)",
            "sources": "JSON list of the swarm instances behind it",
        },
    },
    "decision_signals": {
        "description": "Which signals each decision was made from (foreign keys).",
        "columns": {"decision_id": "decisions.id", "signal_id": "signals.id"},
    },
    "signals": {
        "description": "Every instance's parsed signal or abstention, with the hashes of "
        "the template, parameters and rendered prompt that produced it."
    },
    "llm_calls": {"description": "Every LLM request that reached the API, with usage and cost."},
    "safety_events": {
        "description": "Gate refusals, breaker trips, reconcile findings, watchdog actions.",
        "columns": {"severity": "info | warning | critical"},
    },
    "breaker_history": {"description": "Every breaker transition, with who and why."},
    "account_snapshots": {"description": "Account values at reconciles and by the watchdog."},
    "snapshots": {
        "description": "Index of the per-cycle decision snapshots (JSON files).",
        "columns": {
            "schema_version": "snapshot format: 2 can be replayed (python -m runtime replay "
            "CYCLE); NULL is the format before replay",
            "config_hash": "sha256 of the config stored in the snapshot (secrets removed)",
        },
    },
}

QUERIES: dict[str, dict[str, str]] = {
    "trade_story": {
        "title": "Trade story: fills with the intent and decision behind them",
        "sql": "SELECT * FROM trade_story ORDER BY exec_time DESC",
        "description": "For the whole chain of one fill: python -m runtime why EXEC_ID",
    },
    "daily_pnl_by_instance_and_symbol": {
        "title": "Daily realised PnL by instance and symbol",
        "sql": "SELECT * FROM daily_pnl_by_instance_symbol ORDER BY day DESC, instance",
    },
    "llm_spend_by_instance_and_day": {
        "title": "LLM spend by instance and day",
        "sql": "SELECT * FROM llm_spend_by_instance_day ORDER BY day DESC, cost_usd DESC",
    },
    "llm_spend_per_day": {
        "title": "LLM spend per day",
        "sql": "SELECT day, ROUND(SUM(cost_usd), 4) AS cost_usd, SUM(calls) AS calls "
        "FROM llm_spend_by_instance_day GROUP BY day ORDER BY day",
        "description_html": _chart("llm_spend_per_day", "day", "cost_usd", "bar"),
    },
    "equity_over_time": {
        "title": "Equity (net liquidation) and daily PnL over time",
        "sql": "SELECT at, net_liquidation, daily_pnl, unrealized_pnl, realized_pnl "
        "FROM account_snapshots WHERE net_liquidation IS NOT NULL ORDER BY at",
        "description_html": _chart("equity_over_time", "at", "net_liquidation"),
    },
    "refusals_by_reason": {
        "title": "Gate refusals by reason",
        "sql": "SELECT reason, SUM(refusals) AS refusals FROM refusals_by_reason "
        "GROUP BY reason ORDER BY refusals DESC",
    },
    "breaker_history": {
        "title": "Breaker history",
        "sql": "SELECT * FROM breaker_timeline ORDER BY at DESC",
    },
}


def metadata() -> dict[str, Any]:
    """Datasette metadata: titles, table and column descriptions, canned queries."""
    return {
        "title": "IB swarm trader",
        "description": "The audit trail, read-only. Why a trade happened: the trade_story "
        "query, or `python -m runtime why REF` for the whole chain.",
        "databases": {
            DB_NAME: {
                "tables": TABLES,
                "queries": QUERIES,
            }
        },
    }


def serve_args(db_file: Path, metadata_file: Path, host: str, port: int) -> list[str]:
    """The `datasette serve` arguments for a read-only view of `db_file`."""
    metadata_file.write_text(json.dumps(metadata(), indent=1), encoding="utf-8")
    return [
        "serve",
        f"{db_file}",
        "--metadata",
        str(metadata_file),
        "--host",
        host,
        "--port",
        str(port),
        "--setting",
        "sql_time_limit_ms",
        "3000",
    ]


def free_port(host: str) -> int:
    """A port free on `host` now, chosen by the system (what `--port 0` asks for), so the
    address printed before Datasette starts is the one it serves on."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.bind(addr)
        return int(sock.getsockname()[1])
