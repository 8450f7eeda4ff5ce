"""What a cycle records so that `replay` can run Decide and the gate again, and how it is read
back.

The snapshot (format `SNAPSHOT_SCHEMA_VERSION`) carries the configuration with secrets
removed and its hash, and under `replay` every input Decide and the gate read: the net
liquidation, holdings, market context and working orders Decide saw, the ids the decisions
were stored under, and for each order sent to the gate its request, the gate's frozen view of
the world (`GateContext`: breaker, watchdog liveness as seen, quote, holdings, resting orders,
daily PnL, monotonic clock), the gate's counters as they were right before the check
(`GateState`), the exchange day and wall time, and when the order was counted as sent. An
order sent as a bracket also records the bracket (`bracket_doc`: each protective child with
its orderRef, type, side, quantity and trigger or limit price, and every reason the gate
refuses the bracket for), and the cycle records its swarm instances (their protective
overrides decide the children).
Encoding is plain JSON (floats round-trip exactly; NaN and infinity as JSON's extensions).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from data_lake import flat_dict, from_flat_dict, redact
from skills.brackets import (
    STOP_SUFFIX,
    Bracket,
    bracket_reasons,
    child_ref,
    is_protective_ref,
)
from skills.execution_gate import (
    GateContext,
    GateState,
    Holding,
    OrderRequest,
    Quote,
    WorkingOrder,
    order_ref_for,
)
from skills.risk import RiskConfig
from skills.swarm_core import MergedSignal
from skills.swarm_models import InstanceConfig, MarketContext, OptionView, SymbolView

from .config import Config

__all__ = [
    "bracket_doc",
    "child_kind",
    "child_reasons",
    "config_hash",
    "context_doc",
    "context_from",
    "holdings_from",
    "instances_from",
    "market_from",
    "merged_from",
    "request_from",
    "state_doc",
    "state_from",
    "stored_config",
]

# key-name parts that mark a secret whatever its value (a future key must not leak)
_SECRET_WORDS = frozenset(
    {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials"}
)
MASK = "[REDACTED]"
# scheme://user:password@host -> scheme://[REDACTED]@host (Apprise-style credentials)
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^@/?#\s]+@")


def _scrub(obj: Any, key: str = "") -> Any:
    if key and _SECRET_WORDS & set(key.lower().split("_")):
        return MASK
    if isinstance(obj, dict):
        return {k: _scrub(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v) for v in obj]
    if isinstance(obj, str):
        return _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", obj)
    return obj


def stored_config(cfg: Config) -> dict[str, Any]:
    """Return the config as a snapshot stores it: JSON values, every registered secret
    redacted (API key, notification URLs and their tokens), keys named like a secret masked,
    and credentials removed from any URL."""
    return dict(redact(_scrub(cfg.model_dump(mode="json"))))


def config_hash(stored: Mapping[str, Any]) -> str:
    """The sha256 of a stored config's canonical JSON."""
    canonical = json.dumps(stored, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- the gate's counters ------------------------------------------------------------------
def state_doc(state: GateState) -> dict[str, Any]:
    """The gate's counters as plain JSON (the duplicate guard's keys as lists)."""
    return {
        "sent": list(state.sent),
        "day": state.day,
        "sent_today": state.sent_today,
        "executions": list(state.executions),
        "execution_throttle_latched": state.execution_throttle_latched,
        "recent": [[k, a, q, t] for (k, a, q), t in state.recent.items()],
        "reenabled_by": state.reenabled_by,
    }


def state_from(doc: Mapping[str, Any]) -> GateState:
    """Rebuild the gate's counters from `state_doc`'s output."""
    return GateState(
        sent=collections.deque(float(t) for t in doc["sent"]),
        day=str(doc["day"]),
        sent_today=int(doc["sent_today"]),
        executions=collections.deque(float(t) for t in doc["executions"]),
        execution_throttle_latched=bool(doc["execution_throttle_latched"]),
        recent={(str(k), str(a), float(q)): float(t) for k, a, q, t in doc["recent"]},
        reenabled_by=int(doc["reenabled_by"]),
    )


# --- the gate's view of the world ---------------------------------------------------------
def context_doc(ctx: GateContext) -> dict[str, Any]:
    """The gate's frozen view as plain JSON."""
    return {
        "breaker": ctx.breaker,
        "connected": ctx.connected,
        "watchdog_alive": ctx.watchdog_alive,
        "market_open": ctx.market_open,
        "quote": None if ctx.quote is None else dataclasses.asdict(ctx.quote),
        "holdings": {k: flat_dict(h) for k, h in ctx.holdings.items()},
        "daily_pnl": ctx.daily_pnl,
        "now": ctx.now,
        "qualified": ctx.qualified,
        "working": [flat_dict(w) for w in ctx.working],
        "blocked": sorted(ctx.blocked),
        "paused": list(ctx.paused),
    }


def holdings_from(doc: Mapping[str, Any]) -> dict[str, Holding]:
    """Holdings by contract key from their recorded fields."""
    return {str(k): from_flat_dict(Holding, v) for k, v in doc.items()}


def context_from(doc: Mapping[str, Any]) -> GateContext:
    """Rebuild the gate's view from `context_doc`'s output."""
    quote = doc["quote"]
    return GateContext(
        breaker=doc["breaker"],
        connected=doc["connected"],
        watchdog_alive=doc["watchdog_alive"],
        market_open=doc["market_open"],
        quote=None if quote is None else Quote(**quote),
        holdings=holdings_from(doc["holdings"]),
        daily_pnl=doc["daily_pnl"],
        now=doc["now"],
        qualified=doc["qualified"],
        working=tuple(from_flat_dict(WorkingOrder, w) for w in doc["working"]),
        blocked=frozenset(doc["blocked"]),
        paused=tuple(doc.get("paused", ())),  # recorded since the restart window
    )


def request_from(doc: Mapping[str, Any]) -> OrderRequest:
    """An order request from its recorded fields."""
    return from_flat_dict(OrderRequest, doc)


# --- Decide's inputs ----------------------------------------------------------------------
def market_from(doc: Mapping[str, Any]) -> MarketContext:
    """The market context the swarm and Decide saw."""
    return MarketContext(
        as_of=doc["as_of"],
        symbols=tuple(SymbolView(**s) for s in doc["symbols"]),
        options=tuple(OptionView(**o) for o in doc.get("options", ())),
    )


def merged_from(rows: Iterable[Mapping[str, Any]]) -> list[MergedSignal]:
    """The swarm's merged signals as the snapshot stores them (without the per-instance
    signals, which Decide does not read)."""
    out = []
    for r in rows:
        fields = {k: v for k, v in r.items() if k not in ("signals", "sources")}
        out.append(from_flat_dict(MergedSignal, fields, sources=tuple(r["sources"]), signals=()))
    return out


# --- brackets -------------------------------------------------------------------------------
def child_kind(ref_or_type: str) -> str:
    """'stop' for a stop-loss child (its orderRef ends -sl, or its type is STP), else
    'take-profit'."""
    return "stop" if ref_or_type == "STP" or ref_or_type.endswith(STOP_SUFFIX) else "take-profit"


def bracket_doc(b: Bracket, ctx: GateContext, limits: RiskConfig) -> dict[str, Any]:
    """A bracket as its gate call records it: the parent's fill reference price, each child
    (orderRef, type, side, quantity, trigger or limit price, tif) and every reason the gate
    refuses the bracket as a whole for (`bracket_reasons`; empty: the bracket may go)."""
    parent_ref = order_ref_for(b.parent)
    return {
        "reference_price": b.reference_price,
        "children": [
            {
                "order_ref": child_ref(parent_ref, c.ref_seed),
                "order_type": c.order_type,
                "action": c.action,
                "quantity": c.quantity,
                "aux_price": c.aux_price,
                "limit_price": c.limit_price,
                "tif": c.tif,
            }
            for c in b.children
        ],
        "reasons": bracket_reasons(b, ctx, limits),
    }


def child_reasons(reasons: Iterable[str], child: Mapping[str, Any]) -> list[str]:
    """The reasons of a bracket's refusal that name this child (skills.brackets starts each
    with the child's kind, side and quantity; the whole bracket's start with 'bracket:')."""
    ref = str(child.get("order_ref") or "")
    kind = child_kind(ref if is_protective_ref(ref) else str(child.get("order_type")))
    prefix = f"{kind} {child.get('action')} {float(child.get('quantity') or 0):g}:"
    return [r for r in reasons if r.startswith(prefix)]


def instances_from(rows: Iterable[Mapping[str, Any]]) -> list[InstanceConfig]:
    """The swarm instances a cycle recorded (for their protective overrides)."""
    return [InstanceConfig.model_validate(dict(r)) for r in rows]
