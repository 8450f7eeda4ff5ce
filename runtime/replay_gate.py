"""The execution gate run again on one cycle's recorded inputs (no broker, no database).

Each order the cycle sent to the gate was recorded with the gate's view of the world and its
counters right before the check. A replayed order is judged on that view, with the counters
corrected for what the replay decided differently earlier in the same cycle (an order the
recording sent and the replay refuses is taken out of the rate windows, the daily count and
the duplicate guard; one the replay sends and the recording did not is counted at the time
of its gate view). With the recorded config, nothing is corrected and the verdicts are the
recorded ones, exactly.

What happened after the checks passed (the intent could not be stored, the broker refused to
send) is the world's answer, not the gate's: a replay whose checks pass keeps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skills.execution_gate import (
    GateState,
    OrderRequest,
    evaluate,
    evaluate_named,
    order_ref_for,
)
from skills.risk import RiskConfig

from .replay_record import context_from, request_from, state_from

__all__ = ["GateReplayer", "ReplayedVerdict"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayedVerdict:
    """A gate verdict from a replay; `checks` names the failing checks (check, reason)."""

    accepted: bool
    order_ref: str | None
    reasons: tuple[str, ...] = ()
    checks: tuple[tuple[str, str], ...] = ()
    stage: str = "checks"  # checks | suppressed | unavailable | after_checks | no_inputs

    def public(self) -> dict[str, Any]:
        """The fields a recorded verdict has (for side-by-side comparison)."""
        return {"accepted": self.accepted, "order_ref": self.order_ref, "reasons": self.reasons}


@dataclass
class _Sent:
    request: OrderRequest
    at: float
    day: str


@dataclass
class GateReplayer:
    """Judges one cycle's orders in order. `recorded_limits` tells a refusal by the recorded
    checks from one after them (None: the recorded config could not be read back)."""

    limits: RiskConfig
    recorded_limits: RiskConfig | None
    _done: list[tuple[Mapping[str, Any], _Sent | None]] = field(default_factory=list)

    def judge(self, request: OrderRequest, call: Mapping[str, Any]) -> ReplayedVerdict:
        """Judge `request` on the recorded gate call `call` (the one for the same decision)."""
        ref = order_ref_for(request)
        if "suppressed" in call:  # the cycle was cut before the gate: the same again
            self._done.append((call, None))
            reason = str(call["suppressed"])
            return ReplayedVerdict(
                accepted=False, order_ref=None, reasons=(reason,), stage="suppressed"
            )
        if "unavailable" in call:  # the broker could not be asked: the same again
            self._done.append((call, None))
            reason = str(call["unavailable"])
            return ReplayedVerdict(
                accepted=False, order_ref=ref, reasons=(reason,), stage="unavailable"
            )
        ctx = context_from(call["context"])
        day = str(call["day"])
        state = self._state(call)
        checks = tuple(evaluate_named(request, ctx, state, self.limits, day))
        if checks:
            self._done.append((call, None))
            return ReplayedVerdict(
                accepted=False,
                order_ref=ref,
                reasons=tuple(r for _, r in checks),
                checks=checks,
            )
        recorded = call.get("verdict") or {}
        if not recorded.get("accepted", True) and self._refused_after_checks(call):
            self._done.append((call, None))  # the intent or the broker said no: the same
            return ReplayedVerdict(
                accepted=False,
                order_ref=ref,
                reasons=tuple(recorded.get("reasons") or ()),
                stage="after_checks",
            )
        at = float(call.get("sent_at", ctx.now))
        self._done.append((call, _Sent(request, at, day)))
        return ReplayedVerdict(accepted=True, order_ref=ref)

    def skip(self, call: Mapping[str, Any]) -> None:
        """The replay does not send this recorded order to the gate (refused at Decide)."""
        self._done.append((call, None))

    def _refused_after_checks(self, call: Mapping[str, Any]) -> bool:
        if self.recorded_limits is None or "sent_at" in call:
            return False
        original = request_from(call["request"])
        ctx = context_from(call["context"])
        state = state_from(call["state"])
        return not evaluate(original, ctx, state, self.recorded_limits, str(call["day"]))

    def _state(self, call: Mapping[str, Any]) -> GateState:
        """The recorded counters, corrected for the earlier orders of this cycle that the
        replay sent and the recording did not, or the other way round."""
        state = state_from(call["state"])
        for earlier, replayed in self._done:
            recorded_at = earlier.get("sent_at")
            recorded = request_from(earlier["request"])
            if recorded_at is not None and (replayed is None or replayed.request != recorded):
                _unsend(state, recorded, float(recorded_at), str(earlier["day"]))
            if replayed is not None and (recorded_at is None or replayed.request != recorded):
                state.record_sent(replayed.request, replayed.at, replayed.day)
        return state


def _unsend(state: GateState, r: OrderRequest, at: float, day: str) -> None:
    """Take one recorded send out of the counters (the replay did not send it)."""
    with contextlib.suppress(ValueError):
        state.sent.remove(at)
    if state.day == day and state.sent_today > 0:
        state.sent_today -= 1
    if state.recent.get((r.key, r.action, r.quantity)) == at:
        del state.recent[(r.key, r.action, r.quantity)]
