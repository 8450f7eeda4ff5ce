"""How `replay` prints: the recorded and the replayed decisions and verdicts side by side
(each bracket's protective children under their parent), every difference, and a range's
summary."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from data_lake import Contract

from .replay import CycleReplay, cover_text
from .replay_record import child_kind, child_reasons
from .replay_summary import category_of

__all__ = ["diff_text", "render_replay", "render_summary"]

WIDTH = 44


def _cut(text: str, n: int = WIDTH) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _decision(d: Mapping[str, Any] | None) -> str:
    if d is None:
        return "-"
    if d.get("accepted"):
        return f"accepted {d.get('quantity', 0):g}"
    return "refused: " + str(d.get("reason", ""))


def _verdict(v: Mapping[str, Any] | None) -> str:
    if v is None:
        return "- (not sent to the gate)"
    if v.get("accepted"):
        return f"accepted {v.get('order_ref')}"
    return "REFUSED: " + "; ".join(v.get("reasons") or [])


def _child(b: Mapping[str, Any] | None, kind: str) -> str:
    """One protective child of a recorded or replayed bracket: type, trigger or limit price,
    quantity, and the gate's reasons against it."""
    child = next(
        (c for c in (b or {}).get("children") or [] if child_kind(str(c["order_ref"])) == kind),
        None,
    )
    if b is None or child is None:
        return "- (none)"
    price = child.get("aux_price") if child.get("order_type") == "STP" else child.get("limit_price")
    text = f"{child.get('order_type')} {price:g} x{child.get('quantity', 0):g}"
    own = child_reasons(b.get("reasons") or [], child)
    return text + (" REFUSED: " + "; ".join(own) if own else "")


def _children(bracket: Mapping[str, Any] | None) -> list[str]:
    """The rows of a gate entry's protective children (none when no bracket was built)."""
    if not bracket or not (bracket["recorded"] or bracket["replayed"]):
        return []
    kinds = {
        child_kind(str(c["order_ref"]))
        for side in ("recorded", "replayed")
        for c in (bracket[side] or {}).get("children") or []
    }
    return [
        _row(f"  └ {kind}", _child(bracket["recorded"], kind), _child(bracket["replayed"], kind))
        for kind in sorted(kinds, key=lambda k: k != "stop")
    ]


def _figure(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, (Mapping, list, tuple)):
        return json.dumps(x, separators=(",", ":"), default=str)
    return str(x)


def _verdict_text(v: Mapping[str, Any]) -> str:
    """A gate verdict in words: accepted or refused, its orderRef, every reason."""
    ref = f" (order_ref {v['order_ref']})" if v.get("order_ref") else ""
    if v.get("accepted"):
        return f"accepted{ref}"
    return f"refused{ref}: " + ("; ".join(str(r) for r in v.get("reasons") or []) or "no reason")


def diff_text(kind: str, value: Any) -> str:
    """One side (recorded or replayed) of a difference as text (--json keeps the values)."""
    if value is None:
        return "not sent to the gate" if kind == "not_sent" else "- (none)"
    if isinstance(value, Mapping) and "accepted" in value:
        return _verdict_text(value)
    if isinstance(value, Mapping) and "content" in value and "is_error" in value:
        content = value["content"]
        if isinstance(content, Mapping) and "accepted" in content:
            return "tool result: " + _verdict_text(content)
        if isinstance(content, Mapping) and "error" not in content:
            return "tool result: " + "; ".join(f"{k} {_figure(x)}" for k, x in content.items())
        text = _tool_text(content)
        plain = not value["is_error"] or text.startswith("error:")
        return ("" if plain else "tool error: ") + text
    if isinstance(value, list):
        return "; ".join(str(x) for x in value) or "no reasons against it"
    if isinstance(value, Mapping):
        return "; ".join(f"{k} {_figure(x)}" for k, x in value.items())
    if kind == "resized":
        return f"quantity {_figure(value)}"
    if kind == "turns":
        return f"{value} turns"
    return _figure(value)


def _tool_text(content: Any) -> str:
    if isinstance(content, Mapping) and "accepted" in content:
        return _verdict(content)
    if isinstance(content, Mapping) and "error" in content:
        return f"error: {content['error']}"
    return json.dumps(content, separators=(",", ":"), default=str)


def _what(d: Mapping[str, Any]) -> str:
    what = f"{d.get('action')} {d.get('symbol')}"
    if d.get("sec_type") == "OPT":
        what += f" {d.get('expiry')} {d.get('strike'):g}{d.get('right')}"
    price = d.get("limit_price")
    return f"{what} {d.get('order_type')}" + (f" {price:g}" if price else "")


LABEL = 24


def _row(label: str, left: str, right: str) -> str:
    """One row: its label, the recorded and the replayed side. A label too long for its
    column (an option's contract: SELL NVDA 20270108 162.5P LMT 3.2) is never cut: it gets a
    line of its own, the two sides the next one."""
    mark = " " if left == right else "≠"
    sides = f"{_cut(left):{WIDTH}} {right}"
    if len(label) > LABEL:
        return f" {mark} {label}\n   {'':{LABEL}} {sides}"
    return f" {mark} {label:{LABEL}} {sides}"


def render_replay(r: CycleReplay) -> str:
    """The replay of one cycle as text."""
    src = "the recorded config" if r.config_source == "recorded" else r.config_source
    lines = [
        f"replay of cycle {r.cycle_id} ({r.mode} mode, recorded status {r.status}) with {src}",
        f"  config: recorded {r.recorded_config_hash[:12]}, replayed "
        f"{r.replayed_config_hash[:12]}"
        + (" (the same)" if r.recorded_config_hash == r.replayed_config_hash else ""),
    ]
    for key, a, b in r.config_changes:
        lines.append(f"    {key}: {a!r} -> {b!r}")
    lines += [f"  note: {n}" for n in r.notes]
    if r.decisions:
        lines.append("")
        lines.append(f"   {'decision':24} {'recorded':{WIDTH}} replayed")
        for d in r.decisions:
            rec = d["recorded"]
            lines.append(_row(_what(rec), _decision(rec), _decision(d["replayed"])))
    if r.gate:
        lines.append("")
        lines.append(f"   {'gate':24} {'recorded':{WIDTH}} replayed")
        for g in r.gate:
            req = g["request"]
            contract = Contract.from_row({"symbol": "?", **req})  # an option: in full
            label = f"{req.get('action')} {req.get('quantity', 0):g} {contract}"
            lines.append(_row(label, _verdict(g["recorded"]), _verdict(g["replayed"])))
            lines += _children(g.get("bracket"))
    if r.cover.get("recorded") or r.cover.get("replayed"):
        lines.append("")
        lines.append(f"   {'cover keeper':24} {'recorded':{WIDTH}} replayed")
        rec, rep = r.cover.get("recorded") or [], r.cover.get("replayed") or []
        for i in range(max(len(rec), len(rep))):
            left = cover_text(rec[i]) if i < len(rec) else "-"
            right = cover_text(rep[i]) if i < len(rep) else "-"
            lines.append(_row(f"step {i + 1}", left, right))
    if r.tools:
        lines.append("")
        lines.append(f"   {'tool call (LLM turn)':24} {'recorded result':{WIDTH}} replayed")
        for t in r.tools:
            rec, rep = t["recorded"], t["replayed"]
            lines.append(
                _row(
                    f"{t['turn']}: {t['tool']}",
                    "-" if rec is None else _tool_text(rec["content"]),
                    _tool_text(rep["content"]),
                )
            )
    lines.append("")
    if r.identical:
        lines.append(
            "identical: the same decisions and gate verdicts"
            + (" (and protective children)" if any(g.get("bracket") for g in r.gate) else "")
        )
    else:
        lines.append(f"{len(r.differences)} difference(s):")
        for diff in r.differences:
            lines.append(f"  - {diff.where}: {category_of(diff.kind)}")
            lines.append(f"      recorded: {diff_text(diff.kind, diff.recorded)}")
            lines.append(f"      replayed: {diff_text(diff.kind, diff.replayed)}")
        if r.mode == "llm" and any(d.kind == "tool_result" for d in r.differences):
            lines.append(
                "  (the model's later turns are the recorded ones: with these results it might "
                "have answered differently)"
            )
    return "\n".join(lines)


def _ids(ids: list[int]) -> str:
    """Cycle ids as runs: 'cycle 4', 'cycles 1-3, 7'."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    text = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    return f"cycle{'s' if len(ids) > 1 else ''} {text}"


def render_summary(s: Mapping[str, Any], start: str, end: str, source: str) -> str:
    """A range's summary as text: the counts, every difference by category (then by reason,
    with an example), then every difference."""
    lines = [
        f"replay of {s['cycles']} cycles from {start} to {end} with {source}: "
        f"{s['replayed']} replayed, {s['identical']} identical, {s['different']} different, "
        f"{len(s['cannot_replay'])} cannot be replayed",
    ]
    if s["differences"]:
        lines += [
            "",
            f"{len(s['differences'])} difference(s) in {s['different']} cycle(s), by category "
            "(a cycle with differences of several categories is under each):",
        ]
        for c in s["by_category"]:
            lines.append(f"  {c['category']}: {c['differences']} in {_ids(c['cycles'])}")
            for r in c["reasons"]:
                ex = r["example"]
                lines += [
                    f"    {r['n']:5}  {r['reason']}",
                    f"           e.g. cycle {ex['cycle_id']}, {ex['where']}",
                    f"             recorded: {diff_text(ex['kind'], ex['recorded'])}",
                    f"             replayed: {diff_text(ex['kind'], ex['replayed'])}",
                ]
        lines += ["", "every difference:"]
        for d in s["differences"]:
            lines.append(f"  cycle {d['cycle_id']}: {d['where']}: {d['category']} ({d['reason']})")
    if s["cannot_replay"]:  # not differences: listed apart, each with why
        lines += ["", "could not replay:"]
        for c in s["cannot_replay"]:
            lines.append(f"  cycle {c['cycle_id']}: missing {'; '.join(c['missing'])}")
    return "\n".join(lines)
