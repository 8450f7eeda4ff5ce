"""`python -m runtime why REF`: why did it trade? The chain from a fill back to the market.

execution(s) <- order and its status events <- intent <- gate verdict <- commander decision
(sizing inputs, Kelly, consensus) <- each instance's signal (template, parameters and prompt
hashes, raw answer excerpt) <- the market data the swarm saw. Everything comes from the
database (read-only) and the cycle's decision snapshot (hash-checked). A bracket's parent
lists its protective children and their states; a child (`<ref>-sl`, `<ref>-tp`) tells its
type and price, its parent in short, its OCA sibling and what became of it
(runtime/why_children.py). Any order stored as working tells whether a flatten or panic
cancelled every order after our last record of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_lake import (
    DONE_BROKER_STATES,
    Contract,
    Database,
    SnapshotError,
    load_snapshot,
    price_words,
    resolve_ref,
    trade_chain,
)
from skills.brackets import is_protective_ref, parent_ref_of

from .why_children import (
    child_story,
    children_of,
    panic_behind,
    render_child,
    render_children,
    working_outcome,
)

__all__ = ["UnknownRef", "render_story", "trade_story"]

EXCERPT = 400


class UnknownRef(LookupError):
    """No order, execution or order id matches REF."""


def _market_value(key: str, value: object) -> str:
    """A market figure as a person reads it: an IV rank as 0-100 (the templates' scale), others
    to 6 significant digits (the JSON keeps the full value)."""
    if not isinstance(value, float):
        return str(value)
    if key == "iv_rank":
        return f"{value * 100:.1f}"
    return f"{value:.6g}"


def _excerpt(text: str | None, n: int = EXCERPT) -> str:
    text = (text or "").strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def trade_story(db: Database, data_dir: Path, ref: str) -> dict[str, Any]:
    """Return the whole chain for REF (an orderRef, execId or order id) as one document."""
    order_ref = resolve_ref(db, ref)
    if order_ref is None and is_protective_ref(ref) and resolve_ref(db, parent_ref_of(ref)):
        order_ref = ref  # a child of a bracket the gate refused: never stored, never sent
    if order_ref is None:
        raise UnknownRef(f"no order, execution or order id matches {ref!r}")
    chain = trade_chain(db, order_ref)
    story: dict[str, Any] = {"ref": ref, **chain, "verdict": None, "instances": [], "market": None}
    decision = chain["decision"]
    if decision:
        decision["sources"] = json.loads(decision["sources"] or "[]")
        decision["inputs"] = json.loads(decision.get("inputs") or "{}")
    for event in story["safety_events"]:
        event["details"] = json.loads(event["details"] or "{}")
    intent = chain["intent"]
    if intent and intent["source"] == "panic":  # a close of the panic command: who, and why
        story["panic"] = panic_behind(db, intent)
    doc: dict[str, Any] | None = None
    if chain["snapshot"]:
        try:
            doc = load_snapshot(db, data_dir, snapshot_id=chain["snapshot"]["id"])
        except SnapshotError as exc:
            story["snapshot_error"] = str(exc)
    if doc:
        story["verdict"] = next(
            (v for v in doc.get("verdicts", []) if v.get("order_ref") == order_ref), None
        )
        outcomes = {o["instance"]: o for o in doc.get("swarm", {}).get("outcomes", [])}
        for source in decision["sources"] if decision else []:
            o = outcomes.get(source)
            if o is None:
                continue
            story["instances"].append(
                {
                    "instance": source,
                    "model": o.get("model"),
                    "status": o.get("status"),
                    "prompt_hash": o.get("prompt_hash"),
                    "raw_excerpt": _excerpt(o.get("raw")),
                    "cost_usd": o.get("cost_usd"),
                }
            )
        symbol = (
            chain["intent"]["symbol"]
            if chain["intent"]
            else (decision["symbol"] if decision else None)
        )
        context = doc.get("context") or {}
        views = context.get("symbols") or []
        story["market"] = next(
            (v for v in views if isinstance(v, dict) and v.get("symbol") == symbol), None
        )
        story["account"] = doc.get("account")
    if is_protective_ref(order_ref):
        story["protective"] = child_story(db, data_dir, order_ref, chain)
    else:
        # an order stored as working: still working, or cancelled by a flatten since
        story["outcome"] = working_outcome(db, chain)
        story["children"] = children_of(db, data_dir, order_ref, chain)
    return story


def _origin(story: dict[str, Any]) -> str:
    """Where the order came from: its intent's source; for the panic command's closes, who
    pulled the panic and why."""
    source = str(story["intent"]["source"])
    if source != "panic":
        return source
    panic = story.get("panic")
    return (
        f"the panic command (by {panic['by']}: {panic['reason']})" if panic else "the panic command"
    )


def render_story(story: dict[str, Any]) -> str:
    """Tell the chain as text a person reads top to bottom (newest first, cause last)."""
    out: list[str] = []
    intent = story["intent"]
    title = f"order {story['order_ref']}"
    if intent:
        title += (
            f": {intent['action']} {intent['quantity']:g} {Contract.from_row(intent)} "
            f"{intent['order_type']}"
            + price_words(intent["limit_price"], intent.get("aux_price"))
            + f" ({intent['tif']}), from {_origin(story)}"
        )
    elif story["decision"]:
        d = story["decision"]
        title += (
            f": {d['action']} {d['quantity']:g} {Contract.from_row(d)} {d['order_type']}"
            + (f" @ {d['limit_price']:g}" if d["limit_price"] else "")
            + ", refused by the gate: never stored as an intent, never sent"
        )
    elif story.get("protective"):
        title += (
            f": a protective {story['protective']['kind']} of a bracket the gate refused: "
            "never stored as an intent, never sent"
        )
    else:
        title += ": refused by the gate: never stored as an intent, never sent"
    out.append(title)
    if story.get("protective"):
        out += render_child(story)
    elif story.get("outcome"):
        out.append(f"  outcome: {story['outcome']['text']}")
    execs = story["executions"]
    if execs:
        total = sum(e["shares"] for e in execs)
        out.append(f"  filled {total:g} in {len(execs)} execution(s):")
        for e in execs:
            out.append(
                f"    {e['exec_time']} {e['side']} {e['shares']:g} @ {e['price']:g} "
                f"commission {e['commission'] or 0:.2f} (execId {e['exec_id']})"
            )
    else:
        out.append("  no executions recorded")
    for o in story["orders"]:
        out.append(
            f"  at the broker: order {o['order_id']} (perm {o['perm_id']}, client "
            f"{o['client_id']}) {o['status']}, filled {o['filled']:g}"
            # a status of a working order is only as fresh as the last report recorded
            + ("" if o["status"] in DONE_BROKER_STATES else f", last reported {o['updated_at']}")
        )
    events = story["order_events"]
    if events:
        trail = ", ".join(
            e["status"] or f"error {e['error_code']}: {_excerpt(e['message'], 80)}" for e in events
        )
        out.append(f"  status events: {trail}")
    if intent:
        out.append(
            f"  intent (stored before sending): {intent['status']} since {intent['updated_at']}"
            + (f"; last error {intent['last_error']}" if intent["last_error"] else "")
        )
    out += render_children(story.get("children") or [])
    verdict = story.get("verdict")
    if verdict is not None:
        accepted = verdict.get("accepted")
        reasons = "; ".join(verdict.get("reasons") or []) or "every check passed"
        out.append(f"  gate: {'accepted' if accepted else 'refused'} ({reasons})")
    for ev in story["safety_events"]:
        out.append(f"  safety event {ev['kind']} ({ev['severity']}): {_excerpt(ev['reason'], 200)}")
    decision = story["decision"]
    if decision:
        inputs = decision.get("inputs") or {}
        out.append(
            f"  commander decision {decision['id']} in cycle {decision['cycle_id']}: "
            f"{decision['reason']}"
        )
        if decision.get("kelly_fraction") is not None:
            out.append(f"    Kelly fraction {decision['kelly_fraction']:.4f}")
        if inputs:
            shown = ", ".join(f"{k} {v}" for k, v in inputs.items() if v is not None)
            out.append(f"    inputs: {shown}")
        out.append(f"    from instances: {', '.join(decision['sources']) or '-'}")
    elif intent and intent["source"] == "panic":
        out.append("  no commander decision: a close of the panic command")
    elif intent and intent["source"] != "commander":
        out.append(f"  no commander decision: a {intent['source']} order")
    for s in story["signals"]:
        out.append(
            f"  signal from {s['instance_id']} ({s['model']}): {s['action']} "
            f"{Contract.from_row(s)} "
            f"confidence {s['confidence']}, win p {s['win_probability']}, payoff "
            f"{s['payoff_ratio']}; template {str(s['template_hash'])[:12]}, parameters "
            f"{str(s['params_hash'])[:12]}, prompt {str(s['prompt_hash'])[:12]}"
        )
        if s.get("rationale"):
            out.append(f"    rationale: {_excerpt(s['rationale'], 200)}")
    for inst in story["instances"]:
        out.append(f"  {inst['instance']} answered ({inst['status']}): {inst['raw_excerpt']}")
    market = story.get("market")
    if market:
        shown = ", ".join(f"{k} {_market_value(k, v)}" for k, v in market.items() if k != "symbol")
        out.append(f"  market the swarm saw for {market.get('symbol')}: {shown}")
    if story.get("snapshot"):
        out.append(f"  decision snapshot: {story['snapshot']['path']}")
    if story.get("snapshot_error"):
        out.append(f"  snapshot unavailable: {story['snapshot_error']}")
    return "\n".join(out)
