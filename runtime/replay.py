"""`python -m runtime replay`: run a recorded cycle's Decide and execution gate again, offline.

The inputs come from the cycle's decision snapshot only (market context, account, positions,
the swarm's merged signals, the commander's recorded LLM answers, the gate's recorded view
and counters): no network, no broker, no LLM call, no write. Replayed with the recorded
config, rules mode gives the recorded decisions and verdicts exactly; with another config,
every difference is listed (orders, sizes, refusal reasons). LLM mode walks the recorded
tool-use transcript: the model's answers are the recorded ones, each tool is answered again
under the replay's config, and a tool result that would have changed is reported (the model
might then have answered differently; a replay cannot know how).

A snapshot that cannot be reproduced (an older format, missing pieces) raises
`CannotReplay` naming everything missing.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from data_lake import SNAPSHOT_SCHEMA_VERSION, flat_dict
from skills.brackets import Protection
from skills.execution_gate import GateVerdict
from skills.protective import CoverInputs, step_doc
from skills.swarm_models import InstanceConfig
from skills.swarm_providers import Usage, cost_usd

from .commander import decide_rules, protection_for
from .config import Config, ConfigError, parse_config
from .decision import Decision
from .llm_commander import (
    answer_tool,
    invalid_input,
    order_decision,
    render_commander_prompt,
    verdict_result,
)
from .replay_gate import GateReplayer, ReplayedVerdict
from .replay_record import (
    child_kind,
    child_reasons,
    config_hash,
    holdings_from,
    instances_from,
    market_from,
    merged_from,
    stored_config,
)

__all__ = [
    "CannotReplay",
    "CycleReplay",
    "Difference",
    "cover_text",
    "missing_pieces",
    "replay_cycle",
]


class CannotReplay(Exception):
    """The snapshot cannot be reproduced; `missing` names each missing piece."""

    def __init__(self, cycle_id: Any, missing: list[str]) -> None:
        self.cycle_id = cycle_id
        self.missing = missing
        super().__init__(f"cycle {cycle_id} cannot be replayed: missing " + "; ".join(missing))


@dataclass(frozen=True, slots=True, kw_only=True)
class Difference:
    """One thing the replay decided differently. `kind`: resized, refused, accepted,
    reason (refused either way, with other words or figures), not_sent (recorded at the gate,
    refused at Decide now), tool_result, order_ref, decision, prompt, turns, unjudged, signal,
    cover; for a bracket's protective children: child_added, child_dropped, child_changed
    (type, side, quantity, trigger or limit price, tif), child_refused, child_accepted,
    child_reason (the reasons the gate gives for that child), bracket_reason (reasons about
    the bracket as a whole). runtime.replay_summary files each kind under a category."""

    where: str
    kind: str
    recorded: Any
    replayed: Any
    reason_key: str = ""  # what it is counted under in a range summary


@dataclass(kw_only=True)
class CycleReplay:
    cycle_id: int
    mode: str
    status: str
    recorded_config_hash: str
    replayed_config_hash: str
    config_source: str  # "recorded" or the path of the other config
    config_changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # recorded / replayed
    gate: list[dict[str, Any]] = field(default_factory=list)  # request, recorded, replayed
    tools: list[dict[str, Any]] = field(default_factory=list)  # LLM mode: each tool call
    # the cover keeper's plan before the decisions: {"recorded": [...], "replayed": [...]}
    cover: dict[str, Any] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["identical"] = self.identical
        out["config_changes"] = [
            {"key": k, "recorded": a, "replayed": b} for k, a, b in self.config_changes
        ]
        return out


# --- what a snapshot must carry -------------------------------------------------------------
def _get(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def missing_pieces(doc: Mapping[str, Any]) -> list[str]:
    """Name every piece the snapshot lacks for a replay (empty: it can be replayed)."""
    version = doc.get("schema_version")
    if not isinstance(version, int) or version < SNAPSHOT_SCHEMA_VERSION:
        found = "none (the format before replay)" if version is None else repr(version)
        return [
            f"snapshot schema version {SNAPSHOT_SCHEMA_VERSION} (this one: {found}); it "
            "carries no config, config_hash, replay.gate_calls (the gate's view and counters) "
            "or replay.decide (the working orders Decide saw)"
        ]
    missing = [p for p in ("config", "config_hash", "replay.gate_calls") if _get(doc, p) is None]
    if doc.get("decisions") is None:
        if _get(doc, "replay.sensed") is not None:  # it sensed, then stopped before the end
            missing.append(
                f"decisions (the cycle ended {doc.get('status')}: {doc.get('skipped')} before "
                "its decisions reached the snapshot)"
            )
        return missing  # otherwise nothing was decided (skipped before Sense): nothing to do
    needed = ["account", "positions", "context", "swarm.merged", "replay.sensed"]
    if doc.get("mode") == "llm":
        needed.append("llm_transcript")
    else:
        needed += ["replay.decide.net_liquidation", "replay.decide.working", "replay.decision_ids"]
    missing += [p for p in needed if _get(doc, p) is None]
    for i, call in enumerate(_get(doc, "replay.gate_calls") or []):
        pieces = ["request", "day"]
        if "suppressed" not in call and "unavailable" not in call:
            pieces += ["context", "state", "verdict"]
        missing += [f"replay.gate_calls[{i}].{p}" for p in pieces if p not in call]
    return missing


# --- the replay -----------------------------------------------------------------------------
def _jsonish(obj: Any) -> Any:
    """The value as it reads back from JSON (tuples as lists), for comparison."""
    return json.loads(json.dumps(obj, default=str))


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _config_changes(recorded: Mapping[str, Any], other: Mapping[str, Any]) -> list[Any]:
    a, b = _flat(recorded), _flat(other)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _reason_key(reason: str) -> str:
    """A refusal reason with its figures taken out (to count alike reasons together)."""
    text = re.sub(r"[-+]?\d[\d,]*(\.\d+)?", "N", reason)
    return re.sub(r"'[^']*'", "'…'", text)


def _was(reasons: Iterable[str]) -> str:
    """What a refusal the replay lifted was for, short: '(recorded: ...)' of an accepted key."""
    text = "; ".join(_reason_key(str(r)) for r in reasons) or "not judged"
    return f"(recorded: {text if len(text) <= 60 else text[:59] + '…'})"


def _label(d: Mapping[str, Any]) -> str:
    what = d.get("symbol", "?")
    if d.get("sec_type") == "OPT":
        what = f"{what} {d.get('expiry')} {d.get('strike'):g}{d.get('right')}"
    return f"{d.get('action')} {what}"


def replay_cycle(
    doc: Mapping[str, Any], cfg: Config | None = None, config_source: str = "recorded"
) -> CycleReplay:
    """Run the cycle's Decide and gate again on its snapshot, with `cfg` (None: the recorded
    config). Raises CannotReplay naming what the snapshot lacks."""
    cycle_id = doc.get("cycle_id")
    missing = missing_pieces(doc)
    if missing:
        raise CannotReplay(cycle_id, missing)
    recorded_cfg: Config | None
    try:
        recorded_cfg = parse_config(doc["config"], f"the recorded config of cycle {cycle_id}")
    except ConfigError as exc:
        recorded_cfg = None
        if cfg is None:
            raise CannotReplay(cycle_id, [f"a usable recorded config ({exc})"]) from None
    use = cfg if cfg is not None else recorded_cfg
    if use is None:  # both missing was refused above; said again for the type checker
        raise CannotReplay(cycle_id, ["a usable recorded config"])
    other = stored_config(use) if cfg is not None else dict(doc["config"])
    out = CycleReplay(
        cycle_id=int(doc["cycle_id"]),
        mode=str(doc.get("mode", "rules")),
        status=str(doc.get("status")),
        recorded_config_hash=str(doc["config_hash"]),
        replayed_config_hash=config_hash(other),
        config_source=config_source,
        config_changes=_config_changes(doc["config"], other),
    )
    if doc.get("decisions") is None and out.config_changes:
        # nothing was sensed or decided: what another config would have done is unknowable
        raise CannotReplay(
            out.cycle_id,
            [
                f"the cycle's inputs: it made no decision ({doc.get('status')}: "
                f"{doc.get('skipped')}), so what this config would have done was never "
                "recorded"
            ],
        )
    if doc.get("decisions") is None:
        out.notes.append(
            f"the recorded cycle made no decision ({doc.get('status')}: {doc.get('skipped')}); "
            "nothing to replay"
        )
        return out
    if use.commander.mode != out.mode:
        out.notes.append(
            f"this config's commander mode is {use.commander.mode!r}; the cycle ran in "
            f"{out.mode!r} mode and is replayed in it"
        )
    recorded_limits = recorded_cfg.risk if recorded_cfg is not None else None
    if recorded_cfg is None:
        out.notes.append(
            "the recorded config does not read back: refusals after the checks "
            "(intent not stored, broker refused) cannot be told apart"
        )
    gate = GateReplayer(use.risk, recorded_limits)
    brackets = _brackets(doc, use, recorded_cfg, out)
    _swarm_under(doc, use, recorded_cfg, out)
    _replay_cover(doc, brackets, out)
    if out.mode == "llm":
        _replay_llm(doc, use, recorded_cfg, gate, brackets, out)
    else:
        _replay_rules(doc, use, gate, brackets, out)
    return out


def _replay_cover(doc: Mapping[str, Any], brackets: _Brackets, out: CycleReplay) -> None:
    """Plan the cover keeper's steps again on its recorded inputs, with the protection the
    replayed config gives (runtime.cover_keeper covers with the tightest of any instance)."""
    rec = _get(doc, "replay.cover")
    if rec is None:
        return  # written before the keeper recorded its inputs (or it did not look)
    try:
        inputs = CoverInputs.from_doc(rec["inputs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CannotReplay(out.cycle_id, [f"a readable replay.cover.inputs ({exc!r})"]) from None
    if brackets.instances is None:
        protection = inputs.protection
    else:
        ids = [i.id for i in brackets.instances]
        protection = protection_for(brackets.cfg.commander, brackets.instances, ids)
    recorded = list(rec.get("steps") or [])
    replayed = [step_doc(s) for s in inputs.plan(protection)]
    out.cover = {"recorded": recorded, "replayed": replayed}

    def by_key(steps: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
        found: dict[str, list[Mapping[str, Any]]] = {}
        for st in steps:
            key = str(st.get("key") or (st.get("protect") or {}).get("key") or st.get("why", ""))
            found.setdefault(key.split(":")[0], []).append(st)
        return found

    before, after = by_key(recorded), by_key(replayed)
    for key in sorted({*before, *after}):
        a = [cover_text(x) for x in before.get(key, [])]
        b = [cover_text(x) for x in after.get(key, [])]
        if a != b:
            out.differences.append(
                Difference(
                    where=f"cover {key}",
                    kind="cover",
                    recorded="; ".join(a) or "nothing",
                    replayed="; ".join(b) or "nothing",
                    reason_key="cover keeper: " + ("/".join(
                        sorted({str(x["step"]) for x in [*before.get(key, []),
                                                         *after.get(key, [])]})
                    )),
                )
            )  # fmt: skip


def cover_text(st: Mapping[str, Any]) -> str:
    """A cover step as the replay compares it (what would be sent, not why)."""
    kind = str(st["step"])
    if kind == "CancelRemainder":
        return f"cancel the remainder of {st['parent_ref']}"
    if kind == "Replace":
        inner = st.get("protect")
        return f"replace {', '.join(st['cancel']) or 'nothing'}" + (
            f" by {cover_text(inner)}" if inner else ""
        )
    if kind == "Close":
        return f"close {st['action']} {st['quantity']:g}"
    tp = st.get("take_profit")
    return f"stop {st['action']} {st['quantity']:g} at {st['stop']:g}" + (
        f" + take-profit {tp:g}" if tp is not None else ""
    )


@dataclass(frozen=True, slots=True)
class _Brackets:
    """How the replay rebuilds an opening order's protective children: under the replay's
    config with the recorded instances' overrides (as the commander's `protection_for`), or,
    for a snapshot written before brackets were recorded (`instances` None), with the
    recorded protection and without comparing the children."""

    cfg: Config
    instances: list[InstanceConfig] | None

    @property
    def compared(self) -> bool:
        return self.instances is not None

    def protection(self, sources: Iterable[str], call: Mapping[str, Any]) -> Protection | None:
        if self.instances is None:
            recorded = call.get("protection")
            return None if recorded is None else Protection(**recorded)
        return protection_for(self.cfg.commander, self.instances, tuple(sources))


def _brackets(
    doc: Mapping[str, Any], cfg: Config, recorded: Config | None, out: CycleReplay
) -> _Brackets:
    rows = _get(doc, "replay.instances")
    if rows is None:
        calls = _get(doc, "replay.gate_calls") or []
        protected = any("protection" in c for c in calls) or cfg.commander.stop_loss_pct > 0
        if protected or (recorded is not None and recorded.commander.stop_loss_pct > 0):
            out.notes.append(
                "this snapshot was written before protective children were recorded (it has no "
                "replay.instances or gate_calls[].bracket): only the parent orders are "
                "compared, and their brackets are judged with the recorded stop_loss_pct / "
                "take_profit_pct, not this config's"
            )
        return _Brackets(cfg, None)
    try:
        return _Brackets(cfg, instances_from(rows))
    except ValidationError as exc:
        raise CannotReplay(
            out.cycle_id, [f"usable replay.instances (they do not read back: {exc})"]
        ) from None


def _swarm_under(
    doc: Mapping[str, Any], cfg: Config, recorded: Config | None, out: CycleReplay
) -> None:
    """What the swarm's answers would have met under this config. They are replayed as
    recorded (Think is not re-run); a signal the parse would now reject is reported."""
    if recorded is not None and recorded.risk != cfg.risk:
        out.notes.append(
            "the swarm's prompts carry the [risk] limits: under this config they would differ "
            "(the recorded answers are replayed)"
        )
    limit = cfg.risk.max_order_quantity
    for o in _get(doc, "swarm.outcomes") or []:
        for sig in o.get("signals") or []:
            qty = sig.get("quantity")
            if qty is not None and qty > limit:
                out.differences.append(
                    Difference(
                        where=f"swarm {o.get('instance')} {_label(sig)}",
                        kind="signal",
                        recorded=f"quantity {qty:g} accepted",
                        replayed=f"quantity {qty:g} exceeds max_order_quantity {limit:g}: the "
                        "parse would reject the answer (the instance abstains); Decide still "
                        "uses the recorded signals",
                        reason_key="swarm: quantity above max_order_quantity",
                    )
                )


def _compare_decision(
    out: CycleReplay, i: int, recorded: Mapping[str, Any], replayed: Decision | None
) -> None:
    rep = None if replayed is None else _jsonish(flat_dict(replayed))
    out.decisions.append({"recorded": dict(recorded), "replayed": rep})
    where = f"decision {i + 1} ({_label(recorded)})"
    if rep is None:
        return
    if recorded.get("accepted") != rep["accepted"]:
        kind = "accepted" if rep["accepted"] else "refused"
        out.differences.append(
            Difference(
                where=where,
                kind=kind,
                recorded=recorded.get("reason"),
                replayed=rep["reason"],
                reason_key="decide: "
                + (
                    _reason_key(rep["reason"])
                    if kind == "refused"
                    else f"accepted {_was([str(recorded.get('reason'))])}"
                ),
            )
        )
    elif recorded.get("quantity") != rep["quantity"]:
        out.differences.append(
            Difference(
                where=where,
                kind="resized",
                recorded=recorded.get("quantity"),
                replayed=rep["quantity"],
                reason_key="decide: resized (" + _reason_key(rep["reason"]) + ")",
            )
        )
    elif _jsonish(dict(recorded)) != rep:
        changed = sorted(k for k in rep if _jsonish(recorded.get(k)) != rep[k])
        if changed == ["reason"] and not rep["accepted"]:  # refused either way, other words
            out.differences.append(
                Difference(
                    where=where,
                    kind="reason",
                    recorded=recorded.get("reason"),
                    replayed=rep["reason"],
                    reason_key="decide: " + _reason_key(rep["reason"]),
                )
            )
            return
        out.differences.append(
            Difference(
                where=where,
                kind="decision",
                recorded={k: recorded.get(k) for k in changed},
                replayed={k: rep[k] for k in changed},
                reason_key="decide: " + ", ".join(changed) + " changed",
            )
        )


def _compare_verdict(
    out: CycleReplay,
    request: Mapping[str, Any],
    recorded: Mapping[str, Any] | None,
    replayed: ReplayedVerdict | None,
    call: Mapping[str, Any] | None = None,
    brackets: _Brackets | None = None,
    not_sent: str = "",
) -> None:
    """Compare one order's recorded and replayed verdicts (and, when the snapshot records
    brackets, its protective children: `call` is the recorded gate call). `not_sent`: why
    the replay did not send it (`replayed` None), as a range summary counts it."""
    where = f"gate {_label(request)} {request.get('quantity', 0):g}"
    rep = None if replayed is None else _jsonish(replayed.public())
    rec = (
        None
        if recorded is None
        else {k: _jsonish(recorded.get(k)) for k in ("accepted", "order_ref", "reasons")}
    )
    entry: dict[str, Any] = {
        "request": dict(request),
        "recorded": rec,
        "replayed": rep,
        "checks": [list(c) for c in replayed.checks] if replayed else [],
        "stage": replayed.stage if replayed else None,
        "bracket": None,  # {recorded, replayed}: each None or replay_record.bracket_doc
    }
    out.gate.append(entry)
    if brackets is not None and brackets.compared and call is not None:
        rec_b = call.get("bracket")
        rep_b = None if replayed is None else replayed.bracket
        entry["bracket"] = {"recorded": _jsonish(rec_b), "replayed": _jsonish(rep_b)}
        if replayed is not None and replayed.stage != "no_inputs":
            _compare_children(
                out, where, entry["bracket"]["recorded"], entry["bracket"]["replayed"]
            )
    if rec == rep:
        return
    if replayed is None:  # recorded at the gate; the replay refused it at Decide
        out.differences.append(
            Difference(
                where=where,
                kind="not_sent",
                recorded=rec,
                replayed=None,
                reason_key=not_sent or "not sent to the gate",
            )
        )
        return
    rep = _jsonish(replayed.public())
    if replayed.stage == "no_inputs":
        out.differences.append(
            Difference(
                where=where,
                kind="unjudged",
                recorded=rec,
                replayed=rep,
                reason_key="unjudged: no recorded gate inputs",
            )
        )
        return
    key = ", ".join(name for name, _ in replayed.checks) or replayed.stage
    if rec is None or rec["accepted"] != rep["accepted"]:
        kind = "accepted" if rep["accepted"] else "refused"
        out.differences.append(
            Difference(
                where=where,
                kind=kind,
                recorded=rec,
                replayed=rep,
                reason_key=f"gate: {key}"
                if kind == "refused"
                else f"gate: accepted {_was((rec or {}).get('reasons') or [])}",
            )
        )
    elif rec["reasons"] != rep["reasons"]:  # refused either way, for other reasons or figures
        out.differences.append(
            Difference(
                where=where, kind="reason", recorded=rec, replayed=rep, reason_key=f"gate: {key}"
            )
        )
    else:
        out.differences.append(
            Difference(
                where=where,
                kind="order_ref",
                recorded=rec,
                replayed=rep,
                reason_key="gate: order_ref changed",
            )
        )


_CHILD_FIELDS = ("order_type", "action", "quantity", "aux_price", "limit_price", "tif")


def _child_text(c: Mapping[str, Any]) -> str:
    price = c.get("aux_price") if c.get("order_type") == "STP" else c.get("limit_price")
    what = "trigger" if c.get("order_type") == "STP" else "limit"
    return (
        f"{c.get('action')} {c.get('quantity', 0):g} {c.get('order_type')} {what} "
        f"{price if price is None else format(price, 'g')} {c.get('tif')}"
    )


def _compare_children(
    out: CycleReplay,
    where: str,
    recorded: Mapping[str, Any] | None,
    replayed: Mapping[str, Any] | None,
) -> None:
    """Every difference between a recorded and a replayed bracket: children present in one
    only, their type, side, quantity, price or tif, and the gate's reasons for each child and
    for the bracket as a whole."""

    def by_kind(b: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
        return {child_kind(str(c["order_ref"])): c for c in (b or {}).get("children") or []}

    rec, rep = by_kind(recorded), by_kind(replayed)
    rec_reasons = list((recorded or {}).get("reasons") or [])
    rep_reasons = list((replayed or {}).get("reasons") or [])
    for kind in sorted(set(rec) | set(rep), key=lambda k: k != "stop"):
        here = f"{where} {kind}"
        a, b = rec.get(kind), rep.get(kind)
        if a is None or b is None:
            what = "added" if a is None else "dropped"
            out.differences.append(
                Difference(
                    where=here,
                    kind=f"child_{what}",
                    recorded=None if a is None else _child_text(a),
                    replayed=None if b is None else _child_text(b),
                    reason_key=f"bracket: {kind} {what}",
                )
            )
            continue
        changed = [f for f in _CHILD_FIELDS if a.get(f) != b.get(f)]
        if changed:
            moved = {"aux_price", "limit_price"} & set(changed)
            out.differences.append(
                Difference(
                    where=here,
                    kind="child_changed",
                    recorded=_child_text(a),
                    replayed=_child_text(b),
                    reason_key=f"bracket: {kind} "
                    + ("moved" if moved else "changed (" + ", ".join(changed) + ")"),
                )
            )
        ra, rb = child_reasons(rec_reasons, a), child_reasons(rep_reasons, b)
        if ra != rb:
            kind_ = "child_reason" if ra and rb else ("child_refused" if rb else "child_accepted")
            out.differences.append(
                Difference(
                    where=here,
                    kind=kind_,
                    recorded=ra,
                    replayed=rb,
                    reason_key="bracket: "
                    + (
                        _reason_key(rb[0])
                        if not ra
                        else f"{kind} reason changed ({_reason_key(rb[0])})"
                        if rb
                        else f"{kind} accepted {_was(ra)}"
                    ),
                )
            )
    own = [*rec.values(), *rep.values()]
    whole_a = [r for r in rec_reasons if not any(r in child_reasons([r], c) for c in own)]
    whole_b = [r for r in rep_reasons if not any(r in child_reasons([r], c) for c in own)]
    if whole_a != whole_b:
        out.differences.append(
            Difference(
                where=f"{where} bracket",
                kind="bracket_reason",
                recorded=whole_a,
                replayed=whole_b,
                reason_key="bracket as a whole: "
                + (_reason_key(whole_b[0]) if whole_b else "accepted (recorded: refused)"),
            )
        )


def _calls_by_decision(doc: Mapping[str, Any]) -> dict[Any, Mapping[str, Any]]:
    return {c["request"].get("decision_id"): c for c in doc["replay"]["gate_calls"]}


def _replay_rules(
    doc: Mapping[str, Any],
    cfg: Config,
    gate: GateReplayer,
    brackets: _Brackets,
    out: CycleReplay,
) -> None:
    decide = doc["replay"]["decide"]
    decisions = decide_rules(
        merged_from(doc["swarm"]["merged"]),
        cfg,
        float(decide["net_liquidation"]),
        holdings_from(doc["positions"]),
        market_from(doc["context"]),
        frozenset((str(k), str(a)) for k, a in decide["working"]),
        frozenset(str(k) for k in decide.get("protected", ())),
    )
    recorded = list(doc["decisions"])
    ids = list(doc["replay"]["decision_ids"])
    if len(decisions) != len(recorded) or len(ids) != len(recorded):
        out.notes.append(
            f"the replay made {len(decisions)} decisions, the recording {len(recorded)}"
        )
    calls = _calls_by_decision(doc)
    for i, rec in enumerate(recorded):
        replayed = decisions[i] if i < len(decisions) else None
        _compare_decision(out, i, rec, replayed)
        decision_id = ids[i] if i < len(ids) else None
        call = calls.get(decision_id)
        if replayed is None or not replayed.accepted:
            if call is not None:
                gate.skip(call)
                why = "no decision" if replayed is None else _reason_key(replayed.reason)
                _compare_verdict(
                    out,
                    call["request"],
                    call.get("verdict"),
                    None,
                    call,
                    brackets,
                    not_sent=f"decide: {why}",
                )
            continue
        request = replayed.request(out.cycle_id, decision_id)
        if call is None:  # refused at Decide when recorded: the gate never saw its world
            _compare_verdict(
                out,
                flat_dict(request),
                None,
                ReplayedVerdict(
                    accepted=False,
                    order_ref=None,
                    reasons=(
                        "no recorded gate inputs for this order (the recording refused "
                        "it at Decide): the gate cannot be replayed for it",
                    ),
                    stage="no_inputs",
                ),
            )
            continue
        verdict = gate.judge(request, call, brackets.protection(replayed.sources, call))
        _compare_verdict(out, call["request"], call.get("verdict"), verdict, call, brackets)


def _tool_results(messages: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for m in messages:
        if m.get("role") == "user" and isinstance(m.get("content"), list):
            for block in m["content"]:
                if isinstance(block, Mapping) and block.get("type") == "tool_result":
                    out[str(block.get("tool_use_id"))] = block
    return out


def _replay_llm(
    doc: Mapping[str, Any],
    cfg: Config,
    recorded_cfg: Config | None,
    gate: GateReplayer,
    brackets: _Brackets,
    out: CycleReplay,
) -> None:
    messages = list(doc["llm_transcript"])
    if recorded_cfg is not None and render_commander_prompt(cfg) != render_commander_prompt(
        recorded_cfg
    ):
        out.differences.append(
            Difference(
                where="commander system prompt",
                kind="prompt",
                recorded="rendered from the recorded config",
                replayed="rendered from this config: the model would have been told other "
                "limits or settings (its recorded answers are replayed as they were)",
                reason_key="llm: system prompt changed",
            )
        )
    turns = [m for m in messages if m.get("role") == "assistant"]
    turns = turns[: _turns_within_budget(doc, cfg, out, len(turns))]
    if len(turns) > cfg.commander.max_turns:
        out.differences.append(
            Difference(
                where="commander turns",
                kind="turns",
                recorded=len(turns),
                replayed=cfg.commander.max_turns,
                reason_key="llm: fewer turns allowed",
            )
        )
        turns = turns[: cfg.commander.max_turns]
    results = _tool_results(messages)
    merged = [dict(m) for m in doc["swarm"]["merged"]]
    holdings = holdings_from(doc["positions"])
    values = {str(k): float(v) for k, v in doc["account"].items()}
    calls = list(doc["replay"]["gate_calls"])
    recorded_decisions = list(doc["decisions"])
    placed = 0
    for t, turn in enumerate(turns):
        for block in turn.get("content") or []:
            if not isinstance(block, Mapping) or block.get("type") != "tool_use":
                continue
            name, raw = str(block.get("name")), block.get("input")
            recorded_block = results.get(str(block.get("id")))
            answer = answer_tool(name, raw, cfg, merged, holdings, values)
            verdict: ReplayedVerdict | None = None
            if answer is None:  # place_guarded_order: the same decision, the gate again
                try:
                    decision = order_decision(raw)
                except ValidationError as exc:  # never executed, then or now
                    answer = invalid_input(exc)
                else:
                    rec = recorded_decisions[placed] if placed < len(recorded_decisions) else {}
                    _compare_decision(out, placed, rec, decision)
                    if placed >= len(calls):
                        raise CannotReplay(
                            out.cycle_id, [f"replay.gate_calls[{placed}] (order #{placed + 1})"]
                        )
                    call = calls[placed]
                    placed += 1
                    request = decision.request(out.cycle_id, call["request"].get("decision_id"))
                    verdict = gate.judge(request, call, brackets.protection(decision.sources, call))
                    _compare_verdict(
                        out, call["request"], call.get("verdict"), verdict, call, brackets
                    )
                    answer = verdict_result(_as_gate_verdict(verdict))
            result, is_error = answer
            replayed = {"content": _jsonish(result), "is_error": is_error}
            recorded = None
            if recorded_block is not None:
                content = recorded_block.get("content")
                try:
                    parsed = json.loads(content) if isinstance(content, str) else content
                except json.JSONDecodeError:
                    parsed = content
                recorded = {"content": parsed, "is_error": bool(recorded_block.get("is_error"))}
            out.tools.append(
                {
                    "turn": t + 1,
                    "tool": name,
                    "input": raw,
                    "recorded": recorded,
                    "replayed": replayed,
                }
            )
            if recorded != replayed:
                key = ""
                if verdict is not None and not verdict.accepted and verdict.checks:
                    key = "gate: " + ", ".join(n for n, _ in verdict.checks)
                out.differences.append(
                    Difference(
                        where=f"turn {t + 1} tool {name}",
                        kind="tool_result",
                        recorded=recorded,
                        replayed=replayed,
                        reason_key=key or f"llm: {name} result changed",
                    )
                )
    for call in calls[placed:]:  # recorded orders the replayed turns never placed
        _compare_verdict(
            out,
            call["request"],
            call.get("verdict"),
            None,
            call,
            brackets,
            not_sent="llm: the replayed turns never placed it",
        )


def _turns_within_budget(doc: Mapping[str, Any], cfg: Config, out: CycleReplay, n: int) -> int:
    """How many of the recorded turns this config's per-cycle budget would have allowed
    (each turn priced with this config's price table)."""
    recorded = _get(doc, "replay.llm_turns")
    if not isinstance(recorded, list):
        out.notes.append("no per-turn usage recorded: the per-cycle budget is not replayed")
        return n
    models = {str(t.get("model")) for t in recorded}
    if models != {cfg.commander.model}:
        out.notes.append(
            f"the recorded answers came from {sorted(models)}; this config asks "
            f"{cfg.commander.model!r} (the answers are replayed as recorded)"
        )
    spent = 0.0
    for i, t in enumerate(recorded[:n]):
        if spent >= cfg.swarm.max_usd_per_cycle:
            out.differences.append(
                Difference(
                    where="commander budget",
                    kind="turns",
                    recorded=n,
                    replayed=i,
                    reason_key="llm: per-cycle budget spent",
                )
            )
            return i
        spent += cost_usd(str(t.get("model")), Usage(**t["usage"]), cfg.swarm.prices)
    return n


def _as_gate_verdict(v: ReplayedVerdict) -> GateVerdict:
    return GateVerdict(v.accepted, v.order_ref, v.reasons)
