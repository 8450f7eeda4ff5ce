"""A range of replayed cycles summed up (`replay --from --to`).

Every difference of every replayed cycle is filed under exactly one category (what changed
for its order: refused now, accepted now, resized, refused either way with another reason,
...) and, within it, counted by reason with one example. So the category counts are counts of
differences and add up to all of them; a cycle with differences in several categories is
listed under each, and every cycle that differs is listed under at least one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .replay import CycleReplay

__all__ = ["CATEGORIES", "category_of", "summarise"]

# Difference kind -> category, most consequential first (the order a summary lists them in).
CATEGORIES: dict[str, str] = {
    "refused": "refused now, accepted when recorded",
    "accepted": "accepted now, refused when recorded",
    "resized": "resized",
    "not_sent": "not sent to the gate, refused at Decide now",
    "reason": "refused either way, reason changed",
    "unjudged": "not judged, no recorded gate inputs",
    "child_added": "protective child added or dropped",
    "child_dropped": "protective child added or dropped",
    "child_changed": "protective child moved or changed",
    "child_refused": "protective child or bracket judged differently",
    "child_accepted": "protective child or bracket judged differently",
    "child_reason": "protective child or bracket judged differently",
    "bracket_reason": "protective child or bracket judged differently",
    "cover": "cover keeper's plan changed",
    "signal": "swarm signal the parse would now reject",
    "tool_result": "LLM tool result changed",
    "turns": "LLM turns cut",
    "prompt": "LLM commander prompt changed",
    "decision": "decision changed otherwise",
    "order_ref": "order ref changed",
}
_ORDER = list(dict.fromkeys(CATEGORIES.values()))


def category_of(kind: str) -> str:
    """The category a difference of `kind` is counted under (an unknown kind: itself, so
    that nothing is left out of a summary)."""
    return CATEGORIES.get(kind, kind)


def summarise(replays: list[CycleReplay], refused: list[dict[str, Any]]) -> dict[str, Any]:
    """The range's counts, its differences by category and reason (each reason with its
    first occurrence as an example), and every difference in cycle order. `refused` lists the
    cycles that could not be replayed ({cycle_id, missing})."""
    rows: list[dict[str, Any]] = [
        {
            "cycle_id": r.cycle_id,
            "where": d.where,
            "kind": d.kind,
            "category": category_of(d.kind),
            "reason": d.reason_key or d.kind,
            "recorded": d.recorded,
            "replayed": d.replayed,
        }
        for r in replays
        for d in r.differences
    ]
    categories = sorted(
        {row["category"] for row in rows},
        key=lambda c: (_ORDER.index(c) if c in _ORDER else len(_ORDER), c),
    )
    by_category = []
    for category in categories:
        mine = [row for row in rows if row["category"] == category]
        counts = Counter(row["reason"] for row in mine)
        by_category.append(
            {
                "category": category,
                "differences": len(mine),
                "cycles": sorted({row["cycle_id"] for row in mine}),
                "reasons": [
                    {
                        "reason": reason,
                        "n": n,
                        "example": _example(next(x for x in mine if x["reason"] == reason)),
                    }
                    for reason, n in counts.most_common()
                ],
            }
        )
    return {
        "cycles": len(replays) + len(refused),
        "replayed": len(replays),
        "identical": sum(1 for r in replays if r.identical),
        "different": sum(1 for r in replays if not r.identical),
        "cannot_replay": refused,
        "by_category": by_category,
        "differences": rows,
    }


def _example(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("cycle_id", "where", "kind", "recorded", "replayed")}
