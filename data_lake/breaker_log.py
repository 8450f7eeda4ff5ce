"""The breaker's transitions in SQLite (the authoritative state is the breaker's own file)."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

__all__ = ["breaker_history", "record_breaker_transition"]


def record_breaker_transition(
    db: Database,
    *,
    at: str,
    from_state: str,
    to_state: str,
    source: str,
    actor: str | None,
    reason: str,
    generation: int,
) -> None:
    """Append a transition to the history and keep the one-row current state (newest wins)."""
    db.conn.execute(
        "INSERT INTO breaker_history (at, from_state, to_state, source, actor, reason, "
        "generation) VALUES (?,?,?,?,?,?,?)",
        (at, from_state, to_state, source, actor, reason, generation),
    )
    db.conn.execute(
        "INSERT INTO breaker_state (id, state, since, source, reason, generation) "
        "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
        "since = excluded.since, source = excluded.source, reason = excluded.reason, "
        "generation = excluded.generation WHERE excluded.generation >= "
        "breaker_state.generation",
        (to_state, at, source, reason, generation),
    )


def breaker_history(db: Database, limit: int = 10) -> list[dict[str, Any]]:
    """Return the newest transitions, newest first."""
    return list(
        db.query(
            "SELECT at, from_state, to_state, source, actor, reason, generation FROM "
            "breaker_history ORDER BY id DESC LIMIT ?",
            [limit],
        )
    )
