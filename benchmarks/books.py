"""The accounting invariant every drill and the soak assert after their faults.

The broker's books (the paper gateway's ledger, read over its admin channel) and ours (the
SQLite file, read-only) must agree:

1. every broker execution of our sessions is stored, exactly once (execId is the key);
2. broker positions equal the seeded positions plus what the stored executions add up to;
3. no order at the broker from our sessions without a stored intent;
4. no orderRef sent twice;
5. every stored intent is in a state that agrees with the broker's order;
6. no orphan protective order: a stop or take-profit of ours still working at the broker is
   held for a working parent, or reduces a position the broker holds on its contract; and the
   working (not held) stops on a contract, like its take-profits, never add up to more than
   the position (a stop that fired would flip it);
7. with `covered=True` (protection configured): every position is covered exactly by working
   stops of ours.

Our own records may lag a moment behind the broker (the writer queue), so the check is
retried until it holds or the deadline passes; the failure names every disagreement.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from data_lake import Contract, DatabaseError, DataLakeMissing, open_readonly
from paper_gateway import AdminClient

OUR_CLIENTS = (1, 999, 1000)  # main loop, watchdog, panic (config defaults in the tests)
_PROTECTIVE = ("-sl", "-tp")  # orderRef suffixes of protective orders (skills.brackets)

_AGREES = {
    "Filled": {"filled"},
    "Cancelled": {"cancelled", "rejected"},
    "ApiCancelled": {"cancelled", "rejected"},
    "Inactive": {"rejected", "cancelled"},
}


def _key(row: Mapping[str, Any]) -> str:
    return Contract.from_row(row).key


def disagreements(
    admin: AdminClient,
    data_dir: Path,
    *,
    seeded: Mapping[str, float] | None = None,
    clients: Iterable[int] = OUR_CLIENTS,
    covered: bool = False,
) -> list[str]:
    """Return every way the broker's books and ours disagree (empty: they balance)."""
    ours = set(clients)
    ledger = admin.call("ledger")
    state = admin.call("state")
    try:
        db = open_readonly(data_dir)
        stored = {r["exec_id"]: r for r in db.query("SELECT * FROM executions")}
        intents = {r["order_ref"]: r for r in db.query("SELECT * FROM order_intents")}
    except (DataLakeMissing, DatabaseError) as exc:
        return [f"database unreadable: {exc}"]
    problems: list[str] = []

    broker_execs = [e for e in ledger["executions"] if e["client_id"] in ours]
    missing = [e["exec_id"] for e in broker_execs if e["exec_id"] not in stored]
    if missing:
        problems.append(f"broker executions not stored: {missing}")
    known = {e["exec_id"] for e in ledger["executions"]}
    phantom = [x for x in stored if x not in known]
    if phantom:
        problems.append(f"stored executions the broker never made: {phantom}")

    derived: dict[str, float] = defaultdict(float, dict(seeded or {}))
    for e in stored.values():
        derived[_key(e)] += e["shares"] if e["side"] == "BOT" else -e["shares"]
    broker_pos = {_key(p): p["quantity"] for p in state["positions"] if p["quantity"]}
    mine = {k: round(q, 6) for k, q in derived.items() if abs(q) > 1e-9}
    if mine != {k: round(q, 6) for k, q in broker_pos.items()}:
        problems.append(f"positions: broker {broker_pos} != seeded + stored executions {mine}")

    orders = [o for o in ledger["orders"] if o["client_id"] in ours]
    refs = Counter(o["order_ref"] for o in orders if o["order_ref"])
    twice = sorted(r for r, n in refs.items() if n > 1)
    if twice:
        problems.append(f"orderRefs sent more than once: {twice}")
    no_intent = sorted({o["order_ref"] or f"#{o['order_id']}" for o in orders} - set(intents))
    if no_intent:
        problems.append(f"orders at the broker without a stored intent: {no_intent}")

    by_ref = {o["order_ref"]: o for o in orders if o["order_ref"]}
    guarding: dict[tuple[str, str], float] = defaultdict(float)  # (key, -sl|-tp) -> quantity
    for o in orders:
        intent = intents.get(o["order_ref"])
        ref = o["order_ref"] or ""
        if o["status"] in _AGREES or not intent or not ref.endswith(_PROTECTIVE):
            continue
        parent = by_ref.get(intent.get("parent_ref") or "")
        if parent is not None and parent["status"] not in _AGREES:
            continue  # held until its working parent fills
        held = broker_pos.get(_key(intent), 0.0)
        if not (held < 0 if o["action"] == "BUY" else held > 0):
            problems.append(
                f"orphan protective order {ref} ({o['action']} {o['status']}): "
                f"no parent works and the position it protects is {held:g}"
            )
        guarding[(_key(intent), ref[-3:])] += o["quantity"] - o["filled"]
    for (key, kind), quantity in sorted(guarding.items()):
        if quantity > abs(broker_pos.get(key, 0.0)) + 1e-9:
            problems.append(
                f"protective orders ({kind}) on {key} for {quantity:g} exceed the position "
                f"{broker_pos.get(key, 0.0):g}"
            )
    if covered:
        for key, held in sorted(broker_pos.items()):
            if abs(guarding.get((key, "-sl"), 0.0) - abs(held)) > 1e-9:
                problems.append(
                    f"position {key} {held:g} is covered by stops for "
                    f"{guarding.get((key, '-sl'), 0.0):g}"
                )
    for ref, intent in intents.items():
        order = by_ref.get(ref)
        status = intent["status"]
        if order is None:
            if status in ("pending", "submitted", "filled"):
                problems.append(f"intent {ref} is {status} but the broker never had it")
            continue
        allowed = _AGREES.get(order["status"], {"submitted"})
        if status not in allowed:
            problems.append(
                f"intent {ref} is {status}, the broker's order is {order['status']} "
                f"(filled {order['filled']:g})"
            )
    return problems


def assert_books_balance(
    admin: AdminClient,
    data_dir: Path,
    *,
    seeded: Mapping[str, float] | None = None,
    clients: Iterable[int] = OUR_CLIENTS,
    timeout: float = 15.0,
    covered: bool = False,
) -> None:
    """Assert the accounting invariant, waiting up to `timeout` for our records to catch up."""
    deadline = time.monotonic() + timeout
    while True:
        problems = disagreements(admin, data_dir, seeded=seeded, clients=clients, covered=covered)
        if not problems:
            return
        if time.monotonic() >= deadline:
            raise AssertionError("the books do not balance:\n  " + "\n  ".join(problems))
        time.sleep(0.1)
