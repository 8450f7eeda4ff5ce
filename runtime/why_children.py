"""`why` for a bracket: a protective child's story (its type and price, its parent, its OCA
sibling, what became of it) and a parent's children with their states.

A child is a stop-loss (`<parent>-sl`, STP) or a take-profit (`<parent>-tp`, LMT) held at the
broker for the position its parent opens (skills/brackets.py). A child of a bracket the gate
refused was never stored as an intent: its price and the gate's reasons come from the
parent's gate call in the cycle's snapshot (`replay.gate_calls[].bracket`), else from the
parent's refusal alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from data_lake import (
    Contract,
    Database,
    SnapshotError,
    child_intents,
    closes_lifting_protection,
    load_snapshot,
    safety_events_between,
    trade_chain,
)
from skills.brackets import STOP_SUFFIX, TAKE_PROFIT_SUFFIX, is_protective_ref, parent_ref_of

from .replay_record import child_kind, child_reasons

__all__ = [
    "bracket_record",
    "child_story",
    "children_of",
    "panic_behind",
    "render_child",
    "render_children",
    "working_outcome",
]

WORKING = ("pending", "submitted", "unknown", "unresolved")
# Safety events after which nothing is left working at the broker: each is followed by a
# global cancel (reqGlobalCancel, GTC children included) -- the watchdog's trip and a panic
# (both then flatten), the watchdog's cancel of orders still working while HALTED...
GLOBAL_CANCELS = ["breaker_trip", "panic", "halted_orders_working"]
# ... and the watchdog's confirmation that a HALTED account is flat (it cancels every working
# order first). A global cancel that could not be sent says so (CANCEL_FAILED).
NOTHING_WORKING_SINCE = [*GLOBAL_CANCELS, "flat_confirmed"]
CANCEL_FAILED = "global_cancel_failed"
END_OF_TIME = "9999-12-31T23:59:59"
_PANIC_REASON = re.compile(r"^panic by (?P<by>.*?): (?P<why>.*)$", re.DOTALL)


def _kind_name(ref: str) -> str:
    return "stop-loss" if child_kind(ref) == "stop" else "take-profit"


def _sibling_ref(ref: str) -> str:
    parent = parent_ref_of(ref)
    return parent + (TAKE_PROFIT_SUFFIX if ref.endswith(STOP_SUFFIX) else STOP_SUFFIX)


def bracket_record(
    db: Database, data_dir: Path, parent_ref: str, chain: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The bracket the commander built for `parent_ref` as its cycle's snapshot records it
    (children, the gate's bracket reasons), or None (no bracket, or an older snapshot)."""
    chain = chain if chain is not None else trade_chain(db, parent_ref)
    if not chain["snapshot"]:
        return None
    try:
        doc = load_snapshot(db, data_dir, snapshot_id=chain["snapshot"]["id"])
    except SnapshotError:
        return None
    for call in (doc.get("replay") or {}).get("gate_calls") or []:
        if (call.get("verdict") or {}).get("order_ref") == parent_ref and call.get("bracket"):
            return dict(call["bracket"])
    return None


def _price(row: dict[str, Any]) -> tuple[str, float | None]:
    if row.get("order_type") == "STP":
        return "trigger", row.get("aux_price")
    return "limit", row.get("limit_price")


def _describe(ref: str, row: dict[str, Any] | None) -> dict[str, Any]:
    """A child's kind, type, side, quantity and trigger or limit price."""
    out: dict[str, Any] = {
        "order_ref": ref,
        "kind": _kind_name(ref),
        "order_type": "STP" if child_kind(ref) == "stop" else "LMT",
    }
    if row is not None:
        what, price = _price(row)
        out.update(
            order_type=row.get("order_type"),
            action=row.get("action"),
            quantity=row.get("quantity"),
            price_kind=what,
            price=price,
            tif=row.get("tif"),
        )
    return out


def _fills(chain: dict[str, Any]) -> dict[str, Any] | None:
    execs = chain["executions"]
    if not execs:
        return None
    shares = sum(e["shares"] for e in execs)
    price = sum(e["shares"] * e["price"] for e in execs) / shares if shares else 0.0
    return {
        "shares": shares,
        "price": price,
        "at": execs[-1]["exec_time"],
        "exec_ids": [e["exec_id"] for e in execs],
    }


def _parent_summary(
    db: Database, parent_ref: str, chain: dict[str, Any], bracket: dict[str, Any] | None
) -> dict[str, Any]:
    """The parent's story in short: what it was, what became of it, the decision behind it,
    and, when the gate refused it (with its bracket), why."""
    intent, decision = chain["intent"], chain["decision"]
    refusals = [e for e in chain["safety_events"] if e["kind"] == "gate_refusal"]
    reasons: list[str] = []
    if refusals:
        reasons = list(json.loads(refusals[-1]["details"] or "{}").get("reasons") or [])
        reasons = reasons or [refusals[-1]["reason"]]
    none = "none: a standalone cover the daemon placed to keep its position covered"
    out: dict[str, Any] = {
        "standalone": intent is None and not refusals,
        "order_ref": parent_ref,
        "status": intent["status"] if intent else ("refused" if refusals else none),
        "refusal": reasons,
        "bracket_reasons": list((bracket or {}).get("reasons") or []),
        "fills": _fills(chain),
        "decision": None
        if decision is None
        else {"id": decision["id"], "cycle_id": decision["cycle_id"], "reason": decision["reason"]},
    }
    row = intent or (
        json.loads(refusals[-1]["details"] or "{}").get("request") if refusals else None
    )
    if row:
        out["order"] = (
            f"{row['action']} {row['quantity']:g} "
            f"{Contract.from_row(row) if 'opt_right' in row else row['symbol']} "
            f"{row['order_type']}"
            + (f" @ {row['limit_price']:g}" if row.get("limit_price") else "")
        )
    return out


def _cancel_time(chain: dict[str, Any]) -> str:
    for e in chain["order_events"]:
        if e["status"] in ("Cancelled", "ApiCancelled"):
            return str(e["at"])
    return str(chain["intent"]["updated_at"])


def _outcome(
    db: Database,
    ref: str,
    chain: dict[str, Any],
    parent: dict[str, Any],
    sibling: dict[str, Any],
    own_reasons: list[str],
) -> dict[str, Any]:
    """What became of the child: state (never_sent, working, filled, cancelled, rejected)
    and a sentence."""
    intent = chain["intent"]
    if intent is None:
        reasons = parent["bracket_reasons"] or parent["refusal"]
        text = "never sent: its bracket was refused because " + (
            "; ".join(reasons) or "the gate refused its parent"
        )
        if own_reasons and own_reasons != reasons:
            text += f" (this {_kind_name(ref)}: {'; '.join(own_reasons)})"
        return {"state": "never_sent", "text": text, "reasons": reasons, "own": own_reasons}
    working = working_outcome(db, chain)
    if working is not None:
        if working["state"] == "working":
            at_broker = working["broker_status"]
            if parent.get("standalone"):
                held = "; an untriggered stop" if at_broker == "PreSubmitted" else ""
            else:
                held = "" if parent["fills"] else "; held by the broker until its parent fills"
            working["text"] = f"working at the broker ({at_broker}{held})"
        return working
    status = intent["status"]
    if status == "not_sent":
        why = intent["last_error"] or "not sent"
        reasons = parent["refusal"]
        return {
            "state": "never_sent",
            "text": f"never sent: {why}"
            + (f" (its bracket was refused because {'; '.join(reasons)})" if reasons else ""),
            "reasons": reasons,
            "own": own_reasons,
        }
    if status == "filled":
        f = _fills(chain)
        text = "filled" + (
            f": {f['shares']:g} @ {f['price']:g} at {f['at']} (execId {', '.join(f['exec_ids'])})"
            if f
            else f" (avg {intent['avg_fill_price']})"
        )
        return {"state": "filled", "text": text, "fill": f}
    if status == "rejected":
        errors = [e for e in chain["order_events"] if e["error_code"]]
        text = "rejected by the broker: " + (
            f"error {errors[-1]['error_code']}: {errors[-1]['message']}"
            if errors
            else str(intent["last_error"] or "no error recorded")
        )
        return {"state": "rejected", "text": text}
    if status == "cancelled":
        return {"state": "cancelled", **_why_cancelled(db, ref, chain, parent, sibling)}
    return {"state": status, "text": status}


def _when(iso: str, day_of: str | None = None) -> str:
    """'2026-11-20 02:04:02' (UTC, as stored), or '02:04:02' on the day of `day_of`."""
    text = str(iso).replace("T", " ")[:19]
    return text[11:] if day_of is not None and str(day_of)[:10] == text[:10] else text


def _details(event: dict[str, Any]) -> dict[str, Any]:
    raw = event.get("details")
    if isinstance(raw, dict):
        return raw
    try:
        doc = json.loads(raw or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _panic_by(event: dict[str, Any]) -> tuple[str, str]:
    """Who pulled a panic and why: its details, else its reason ('panic by X: WHY')."""
    d = _details(event)
    m = _PANIC_REASON.match(str(event["reason"]))
    by = d.get("by") or (m["by"] if m else "someone")
    why = d.get("reason") or (m["why"] if m else str(event["reason"]))
    return str(by), str(why)


def panic_behind(db: Database, intent: dict[str, Any]) -> dict[str, Any] | None:
    """The panic a close of the panic command (intent source `panic`) came from: the last
    `panic` event recorded at or before its intent, with who pulled it and why."""
    events = safety_events_between(db, ["panic"], "", str(intent["created_at"]))
    if not events:
        return None
    by, why = _panic_by(events[-1])
    return {"at": events[-1]["at"], "by": by, "reason": why}


def _who(event: dict[str, Any]) -> tuple[str, str]:
    """Who cancelled every order and why, from the safety event's recorded kind, source and
    details: the panic command and its --by, or the watchdog and its reason."""
    if event["kind"] == "panic":  # the panic command (recorded with the watchdog's name before)
        by, why = _panic_by(event)
        return "the panic command", f"by {by}: {why}"
    who = f"the {event['source']}"
    if event["kind"] == "breaker_trip":
        return who, f"breaker tripped: {event['reason']}"
    if event["kind"] == "halted_orders_working":
        return who, "breaker HALTED with orders still working"
    return who, str(event["reason"])


def _event_doc(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: event[k] for k in ("kind", "source", "at", "reason")}
    if event["kind"] == "panic":
        out["by"] = _panic_by(event)[0]
    return out


def _status_time(chain: dict[str, Any]) -> str:
    """When the child's last broker status was recorded (else its intent's last change)."""
    statuses = [e for e in chain["order_events"] if e["status"]]
    return str(statuses[-1]["at"] if statuses else chain["intent"]["updated_at"])


def _cancelled_since(db: Database, since: str) -> dict[str, Any] | None:
    """The first event after `since` that left nothing working at the broker, with the
    failure of its global cancel if one followed; None when there is none."""
    found: list[dict[str, Any]] = []
    kinds = [*NOTHING_WORKING_SINCE, CANCEL_FAILED]
    for e in safety_events_between(db, kinds, since, END_OF_TIME):
        if str(e["at"]) <= since:
            continue
        if e["kind"] != CANCEL_FAILED:
            found.append({"event": e, "failed": None})
        elif found:  # the cancel of the event before it was never sent
            found[-1]["failed"] = e
    sent = [f for f in found if f["failed"] is None]
    return sent[0] if sent else (found[-1] if found else None)


def working_outcome(db: Database, chain: dict[str, Any]) -> dict[str, Any] | None:
    """What became of any order (a plain one, a bracket's parent or child) whose stored state
    is working: last known working when an event after our last record of it cancelled every
    order (or tried to), else working at the broker; None when it is not stored as working."""
    intent = chain["intent"]
    if intent is None or intent["status"] not in WORKING:
        return None
    at_broker = chain["orders"][-1]["status"] if chain["orders"] else "no broker status yet"
    since = _status_time(chain)
    later = _cancelled_since(db, since)
    if later is not None:  # our record is older than a cancel of everything
        return _last_known_working(at_broker, since, later)
    return {
        "state": "working",
        "text": f"working at the broker ({at_broker})",
        "broker_status": at_broker,
    }


def _last_known_working(at_broker: str, since: str, later: dict[str, Any]) -> dict[str, Any]:
    """Our record says working, but a later event cancelled everything (or tried to): the
    main loop, which records the broker's word, has not seen it yet."""
    e, failed = later["event"], later["failed"]
    when = _when(e["at"], since)
    if e["kind"] == "flat_confirmed":
        what = (
            f"the {e['source']} confirmed the account flat at {when} with the breaker HALTED, "
            "which leaves no order working"
        )
    else:
        name = {"breaker_trip": "a flatten", "panic": "a panic"}.get(e["kind"], "a global cancel")
        who, why = _who(e)
        what = f"{name} at {when} ({who}, {why}) cancelled every order since"
    unconfirmed = "the main loop has not confirmed it yet"
    if failed is not None:
        what = (
            what.replace(" cancelled every order since", " tried to cancel every order")
            + f", but its global cancel failed at {_when(failed['at'], since)} "
            f"({failed['reason']}): it may still be working"
        )
        unconfirmed = "the main loop has not reported it since"
    out: dict[str, Any] = {
        "state": "last_known_working",
        "text": f"last known working at the broker ({at_broker}, recorded {_when(since)}); "
        f"{what} — {unconfirmed}",
        "broker_status": at_broker,
        "recorded_at": since,
        "since": _event_doc(e),
    }
    if failed is not None:
        out["cancel_failed"] = _event_doc(failed)
    return out


def _why_cancelled(
    db: Database,
    ref: str,
    chain: dict[str, Any],
    parent: dict[str, Any],
    sibling: dict[str, Any],
) -> dict[str, Any]:
    intent = chain["intent"]
    at = _cancel_time(chain)
    if sibling.get("state") == "filled":
        f = sibling.get("fill") or {}
        return {
            "cause": "oca",
            "text": f"cancelled by OCA: its sibling {sibling['order_ref']} filled"
            + (f" ({f['shares']:g} @ {f['price']:g} at {f['at']})" if f else ""),
        }
    if sibling.get("state") == "rejected":
        return {
            "cause": "sibling_rejected",
            "text": f"cancelled with its parent: its sibling {sibling['order_ref']} was "
            "rejected by the broker, and a position never stays without its stop",
        }
    cancels = safety_events_between(db, GLOBAL_CANCELS, str(intent["created_at"]), at)
    if cancels:  # a flatten (a trip or a panic) before the watchdog's repeated global cancel
        flattens = [e for e in cancels if e["kind"] != "halted_orders_working"]
        e = (flattens or cancels)[-1]
        who, why = _who(e)
        if e["kind"] == "halted_orders_working":
            return {
                "cause": "global_cancel",
                "by": _event_doc(e),
                "text": f"cancelled by a global cancel: {who} at {_when(e['at'])} ({why})",
            }
        return {
            "cause": "flatten",
            "by": _event_doc(e),
            "text": f"cancelled by a flatten: {who} at {_when(e['at'])} ({why}) cancelled every "
            "order and closed every position",
        }
    closes = closes_lifting_protection(db, intent, at)
    if closes:
        d = closes[-1]
        return {
            "cause": "close_by_signal",
            "text": f"cancelled by us before a close by signal (decision {d['id']} in cycle "
            f"{d['cycle_id']}: {d['reason']})",
        }
    if not parent["fills"]:
        return {
            "cause": "parent_cancelled",
            "text": "cancelled with its parent, which never filled",
        }
    return {"cause": "unknown", "text": f"cancelled at {at} (no recorded cause)"}


def child_story(db: Database, data_dir: Path, ref: str, chain: dict[str, Any]) -> dict[str, Any]:
    """The story of protective child `ref` (stored or not)."""
    parent_ref = parent_ref_of(ref)
    parent_chain = trade_chain(db, parent_ref)
    bracket = bracket_record(db, data_dir, parent_ref, parent_chain)
    recorded = next(
        (c for c in (bracket or {}).get("children") or [] if c["order_ref"] == ref), None
    )
    parent = _parent_summary(db, parent_ref, parent_chain, bracket)
    sib_ref = _sibling_ref(ref)
    sib_chain = trade_chain(db, sib_ref)
    sib_recorded = next(
        (c for c in (bracket or {}).get("children") or [] if c["order_ref"] == sib_ref), None
    )
    own = child_reasons(parent["bracket_reasons"], recorded) if recorded else []
    story = _describe(ref, chain["intent"] or recorded)
    if sib_chain["intent"] is None and sib_recorded is None:
        outcome = _outcome(db, ref, chain, parent, {}, own)
        story.update(parent=parent, sibling=None, outcome=outcome)
        return story
    sib = _describe(sib_ref, sib_chain["intent"] or sib_recorded)
    # the sibling's state first (it may be the cause of this child's cancel), then the
    # sibling's whole outcome with this child as its sibling: the same story `why` on it tells
    outcome = _outcome(
        db, ref, chain, parent, {**sib, **_outcome(db, sib_ref, sib_chain, parent, {}, [])}, own
    )
    sibling = {**sib, **_outcome(db, sib_ref, sib_chain, parent, {**story, **outcome}, [])}
    story.update(parent=parent, sibling=sibling, outcome=outcome)
    return story


def children_of(
    db: Database, data_dir: Path, parent_ref: str, chain: dict[str, Any]
) -> list[dict[str, Any]]:
    """A parent's protective children with their states (stored, or recorded in its bracket
    when the gate refused it)."""
    if is_protective_ref(parent_ref):
        return []
    refs = [r["order_ref"] for r in child_intents(db, parent_ref)]
    if not refs:
        bracket = bracket_record(db, data_dir, parent_ref, chain)
        refs = [c["order_ref"] for c in (bracket or {}).get("children") or []]
    out = []
    for ref in refs:
        c = child_story(db, data_dir, ref, trade_chain(db, ref))
        out.append({k: v for k, v in c.items() if k not in ("parent", "sibling")})
    return out


def _child_line(c: dict[str, Any]) -> str:
    price = c.get("price")
    what = f"{c['kind']} {c.get('order_type')}"
    if c.get("action"):
        what += f" {c['action']} {c['quantity']:g}"
    if price is not None:
        what += f" {c['price_kind']} {price:g}"
    return f"{c['order_ref']} ({what})"


def render_child(story: dict[str, Any]) -> list[str]:
    """The lines `why` prints for a protective child, after its title."""
    c = story["protective"]
    p = c["parent"]
    out = [f"  protective {_child_line(c)}, {c.get('tif') or 'GTC'}"]
    out.append(f"  outcome: {c['outcome']['text']}")
    parent_line = f"  parent {p['order_ref']}"
    if p.get("order"):
        parent_line += f": {p['order']}"
    state = p["status"]
    if p["fills"]:
        fill = f"{p['fills']['shares']:g} @ {p['fills']['price']:g}"
        state = f"filled {fill}" if state == "filled" else f"{state}, filled {fill}"
    if p["refusal"]:
        state += f" by the gate ({'; '.join(p['refusal'])})"
    out.append(f"{parent_line} ({state})")
    told = (story.get("decision") or {}).get("id")
    if p["decision"] and p["decision"]["id"] != told:  # else told once, below, in full
        d = p["decision"]
        out.append(f"    commander decision {d['id']} in cycle {d['cycle_id']}: {d['reason']}")
    s = c["sibling"]
    if s:
        out.append(f"  OCA sibling {_child_line(s)}: {s['text']}")
    else:
        out.append("  OCA sibling: none (a stop without take-profit)")
    return out


def render_children(children: list[dict[str, Any]]) -> list[str]:
    """The lines `why` prints for a parent's protective children."""
    if not children:
        return []
    out = ["  protective children:"]
    out += [f"    {_child_line(c)}: {c['outcome']['text']}" for c in children]
    return out
