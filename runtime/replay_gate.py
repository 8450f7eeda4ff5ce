"""The execution gate run again on one cycle's recorded inputs (no broker, no database).

Each order the cycle sent to the gate was recorded with the gate's view of the world and its
counters right before the check. A replayed order is judged on that view. Within a cycle only
the cycle's own sends change the send counters (rate windows, daily count, duplicate guard),
so those are rebuilt from the counters before the cycle's first order plus the orders the
replay sent (at their recorded send time, or at their gate view's time when the recording did
not send them); the rest (executions, the throttle latch) is taken as recorded at each order.
With the recorded config the rebuilt counters are the recorded ones and so are the verdicts.

What happened after the checks passed (the intent could not be stored, the broker refused to
send) is the world's answer, not the gate's: a replay whose checks pass keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skills.brackets import Protection, reference_price, with_children
from skills.execution_gate import (
    GateState,
    OrderRequest,
    evaluate,
    evaluate_named,
    order_ref_for,
)
from skills.risk import RiskConfig

from .replay_record import bracket_doc, context_from, request_from, state_from

__all__ = ["GateReplayer", "ReplayedVerdict"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayedVerdict:
    """A gate verdict from a replay; `checks` names the failing checks (check, reason)."""

    accepted: bool
    order_ref: str | None
    reasons: tuple[str, ...] = ()
    checks: tuple[tuple[str, str], ...] = ()
    stage: str = "checks"  # checks | suppressed | unavailable | protection | after_checks |
    # no_inputs
    bracket: dict[str, Any] | None = None  # sent as a bracket: replay_record.bracket_doc

    def public(self) -> dict[str, Any]:
        """The fields a recorded verdict has (for side-by-side comparison)."""
        return {"accepted": self.accepted, "order_ref": self.order_ref, "reasons": self.reasons}


@dataclass
class _Sent:
    request: OrderRequest
    at: float
    day: str
    protective: bool = False  # a bracket's child: rate windows only, not the duplicate guard


@dataclass
class GateReplayer:
    """Judges one cycle's orders in order. `recorded_limits` tells a refusal by the recorded
    checks from one after them (None: the recorded config could not be read back)."""

    limits: RiskConfig
    recorded_limits: RiskConfig | None
    _first: Mapping[str, Any] | None = None  # the counters before the cycle's first order
    _sent: list[_Sent] = field(default_factory=list)  # what the replay sent so far

    def judge(
        self,
        request: OrderRequest,
        call: Mapping[str, Any],
        protection: Protection | None = None,
    ) -> ReplayedVerdict:
        """Judge `request` on the recorded gate call `call` (the one for the same decision);
        an opening order with `protection` is judged as a bracket, whole, as the commander
        sends it."""
        ref = order_ref_for(request)
        if "suppressed" in call:  # the cycle was cut before the gate: the same again
            reason = str(call["suppressed"])
            return ReplayedVerdict(
                accepted=False, order_ref=None, reasons=(reason,), stage="suppressed"
            )
        if "unavailable" in call:  # the broker could not be asked: the same again
            reason = str(call["unavailable"])
            return ReplayedVerdict(
                accepted=False, order_ref=ref, reasons=(reason,), stage="unavailable"
            )
        if "protection_kept" in call:  # a close kept beside its stop at the broker: the same
            reason = str(call["protection_kept"])
            return ReplayedVerdict(
                accepted=False, order_ref=ref, reasons=(reason,), stage="protection"
            )
        ctx = context_from(call["context"])
        day = str(call["day"])
        if self._first is None:
            self._first = call["state"]
        state = self._state(call)
        checks = tuple(evaluate_named(request, ctx, state, self.limits, day))
        bracket, bracket_record = None, None
        if protection is not None and _opens(request, ctx):  # sent as a bracket: judged whole
            q = ctx.quote
            ref_price = reference_price(request, q.bid, q.ask) if q else None
            bracket = with_children(request, ref_price or 0.0, protection)
            bracket_record = bracket_doc(bracket, ctx, self.limits)
            checks += tuple(("bracket", r) for r in bracket_record["reasons"])
        if checks:
            return ReplayedVerdict(
                accepted=False,
                order_ref=ref,
                reasons=tuple(r for _, r in checks),
                checks=checks,
                bracket=bracket_record,
            )
        recorded = call.get("verdict") or {}
        if not recorded.get("accepted", True) and self._refused_after_checks(call):
            # the intent or the broker said no: the same (nothing sent)
            return ReplayedVerdict(
                accepted=False,
                order_ref=ref,
                reasons=tuple(recorded.get("reasons") or ()),
                stage="after_checks",
                bracket=bracket_record,
            )
        at = float(call.get("sent_at", ctx.now))
        self._sent.append(_Sent(request, at, day))
        for child in bracket.children if bracket else ():
            self._sent.append(_Sent(child, at, day, protective=True))
        return ReplayedVerdict(accepted=True, order_ref=ref, bracket=bracket_record)

    def skip(self, call: Mapping[str, Any]) -> None:
        """The replay does not send this recorded order to the gate (refused at Decide)."""
        if self._first is None and "state" in call:
            self._first = call["state"]

    def _refused_after_checks(self, call: Mapping[str, Any]) -> bool:
        if self.recorded_limits is None or "sent_at" in call:
            return False
        if (call.get("bracket") or {}).get("reasons"):
            return False  # its bracket was refused by the checks (recorded with the call)
        original = request_from(call["request"])
        ctx = context_from(call["context"])
        state = state_from(call["state"])
        return not evaluate(original, ctx, state, self.recorded_limits, str(call["day"]))

    def _state(self, call: Mapping[str, Any]) -> GateState:
        """The recorded counters, with the send counters rebuilt from the cycle's start and
        the replay's own sends."""
        state = state_from(call["state"])
        if self._first is None:
            raise RuntimeError("replay gate: a send counter asked for before the first gate call")
        sends = state_from(self._first)
        for o in self._sent:
            sends.record_sent(o.request, o.at, o.day, duplicate_guard=not o.protective)
        state.sent, state.day, state.sent_today, state.recent = (
            sends.sent,
            sends.day,
            sends.sent_today,
            sends.recent,
        )
        return state


def _opens(request: OrderRequest, ctx: Any) -> bool:
    """The request opens a position or adds to one (as runtime.commander decides brackets)."""
    held = ctx.holdings.get(request.key)
    qty = held.quantity if held else 0.0
    return qty == 0 or (qty > 0) == (request.action == "BUY")
