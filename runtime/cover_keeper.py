"""Every cycle, before anything is decided: each position covered exactly by its stops.

`CoverKeeper.keep()` reads the broker now (positions by a reqPositions round trip, every
working order, the fills of ours) and carries out `skills.protective.plan_cover()`: a partly
filled parent's remainder is cancelled, protective orders larger than the position (or on a
flat contract) are cancelled and replaced, uncovered quantity gets a stop (or is closed when
the market is already through the stop). Each step is a safety event; protective orders go
through `place_cover_with_guard`, closes through the commander's gate path. Nothing runs while
the breaker is HALTED (the watchdog is closing everything) or while another path (a refused
child's close) is acting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from data_lake import DONE_BROKER_STATES, Store, log_safety_event
from skills.brackets import Protection
from skills.execution_gate import GateState, GateVerdict, OrderRequest, WorkingOrder
from skills.protective import (
    CancelRemainder,
    Close,
    Covered,
    CoverInputs,
    Protect,
    Replace,
    Step,
    place_cover_with_guard,
)

from .broker import Broker
from .config import Config
from .heartbeat import Clock
from .protection import POLL_S, Sender

__all__ = ["CoverKeeper", "KeptCover"]

log = logging.getLogger("runtime.cover_keeper")


@dataclass(frozen=True, slots=True)
class KeptCover:
    """What one pass did: the steps planned (both looks) and the verdicts of what was sent;
    `inputs` and `planned`: the first look's inputs and plan (for replay; None: no look)."""

    steps: tuple[Step, ...]
    verdicts: tuple[GateVerdict, ...]
    inputs: CoverInputs | None = None
    planned: tuple[Step, ...] = ()


class CoverKeeper:
    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        broker: Broker,
        sender: Sender,
        gate_state: GateState,
        clock: Clock,
        protection: Protection | None,
        busy: Callable[[], bool],
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.broker = broker
        self.sender = sender
        self.gate_state = gate_state
        self.clock = clock
        self.protection = protection
        self.busy = busy
        self._passes = 0  # told apart in the covers' orderRefs (a pass between cycles has none)
        self._lock = asyncio.Lock()  # one pass at a time (a cycle's, or one between cycles)

    async def keep(
        self, cycle_id: int | None, *, breaker: str, blocked: frozenset[str] = frozenset()
    ) -> KeptCover:
        """One pass; cancels first, then (their effect confirmed) a second look that covers.
        `blocked`: contract keys whose order state is unknown (left alone)."""
        if breaker == "HALTED" or self.busy():
            return KeptCover((), ())
        await asyncio.wait_for(self._lock.acquire(), self.cfg.loop.max_cycle_s)
        try:
            self._passes += 1
            return await self._keep(cycle_id, breaker, blocked)
        finally:
            self._lock.release()

    async def _keep(self, cycle_id: int | None, breaker: str, blocked: frozenset[str]) -> KeptCover:
        inputs = await self._inputs(blocked)
        steps = inputs.plan(self.protection)
        planned = tuple(steps)
        done: list[Step] = list(steps)
        verdicts: list[GateVerdict] = []
        cancels = [s for s in steps if isinstance(s, CancelRemainder | Replace)]
        if cancels:
            carried = await self._cancel(cancels, cycle_id)
            if carried is None:  # not confirmed: covered next cycle, from a fresh look
                return KeptCover(tuple(done), (), inputs, planned)
            again = [
                s
                for s in (await self._inputs(blocked)).plan(self.protection)
                if isinstance(s, Protect | Close)
            ]
            done += again
            steps = [_carry(s, carried) for s in again]
        for step in steps:
            if isinstance(step, Protect):
                verdicts.append(await self._protect(step, cycle_id, breaker))
            elif isinstance(step, Close):
                verdicts.append(await self._close(step, cycle_id))
        return KeptCover(tuple(done), tuple(verdicts), inputs, planned)

    async def _inputs(self, blocked: frozenset[str]) -> CoverInputs:
        positions, working = await self._look()
        ours = frozenset(w.order_ref for w in working if self.broker.owns_working(w.order_ref))
        return CoverInputs(
            positions=tuple(positions),
            working=working,
            filled={ref: self.broker.order_filled(ref) for ref in sorted(ours)},
            ours=ours,
            skip=blocked,
            protection=self.protection,
        )

    async def _look(self) -> tuple[list[Covered], tuple[WorkingOrder, ...]]:
        """Positions (a reqPositions round trip, never the cache), every working order, and
        the marks of the held contracts."""
        timeout = self.cfg.broker.request_timeout_s
        fresh = await self.broker.fresh_positions(timeout)
        working = await self.broker.working_orders()
        holdings = await self.broker.holdings()
        positions = [
            Covered(
                contract=p.contract,
                quantity=p.quantity,
                avg_price=p.avg_cost / (p.multiplier or 1.0),
                mark=holdings[p.key].mark if p.key in holdings else p.avg_cost / p.multiplier,
            )
            for p in fresh
        ]
        return positions, working

    async def _cancel(
        self, steps: Sequence[CancelRemainder | Replace], cycle_id: int | None
    ) -> dict[str, Protect | Close] | None:
        """Send the cancels; wait (bounded) for the broker to confirm them. Return the
        replacement covers to carry over (by contract key), or None when not confirmed."""
        refs: list[str] = []
        carried: dict[str, Protect | Close] = {}
        for s in steps:
            if isinstance(s, CancelRemainder):
                self._event("protection_partial", s.why, "warning", s.parent_ref, cycle_id)
                self.broker.cancel(s.parent_ref)
                refs.append(s.parent_ref)
            else:
                self._event("protection_trim", s.why, "warning", s.cancel[0], cycle_id)
                for ref in s.cancel:
                    self.broker.cancel(ref)
                refs += s.cancel
                if s.protect is not None:
                    carried[s.protect.contract.key] = s.protect
        timeout = self.cfg.broker.request_timeout_s
        deadline = self.clock.monotonic() + timeout
        while self.clock.monotonic() < deadline and self._pending(refs):
            await asyncio.sleep(POLL_S)
        pending = self._pending(refs)
        if pending:
            self._event(
                "protection_trim",
                f"cancels of {', '.join(pending)} not confirmed within {timeout:g}s: the "
                "positions are covered again at the next cycle",
                "critical",
                pending[0],
                cycle_id,
            )
            return None
        return carried

    def _pending(self, refs: Sequence[str]) -> list[str]:
        return [r for r in refs if self.broker.order_status(r) not in (None, *DONE_BROKER_STATES)]

    async def cover(self, step: Protect, cycle_id: int | None, breaker: str) -> GateVerdict:
        """Place one `Protect` step now (a partial close's rest), checked and recorded."""
        return await self._protect(step, cycle_id, breaker)

    async def _protect(self, step: Protect, cycle_id: int | None, breaker: str) -> GateVerdict:
        positions, working = await self._look()
        position = next((p for p in positions if p.key == step.contract.key), None)
        if position is None:
            return GateVerdict(False, None, (f"{step.contract.key}: no position any more",))
        now = self.clock.monotonic()
        verdict = await place_cover_with_guard(
            step,
            position,
            working,
            breaker=breaker,
            connected=self.broker.ready,
            collar_pct=self.cfg.risk.protective_collar_pct,
            state=self.gate_state,
            store=self.store,
            submitter=self.broker,
            cycle_id=cycle_id,
            now=now,
            intent_timeout_s=self.cfg.data.write_timeout_s,
            nonce=f"p{self._passes}",
        )
        what = f"stop {step.action} {step.quantity:g} {step.contract.key} at {step.stop:g}" + (
            f" with take-profit {step.take_profit:g}" if step.take_profit is not None else ""
        )
        if verdict.accepted:
            self._event(
                "protection_cover",
                f"{step.why}: {what} sent as {verdict.order_ref}",
                "warning",
                verdict.order_ref,
                cycle_id,
            )
        else:
            self._event(
                "protection_cover",
                f"{step.why}: {what} REFUSED: {'; '.join(verdict.reasons)} (the watchdog's "
                "limits still apply; tried again next cycle)",
                "critical",
                verdict.order_ref,
                cycle_id,
            )
        return verdict

    async def _close(self, step: Close, cycle_id: int | None) -> GateVerdict:
        request = OrderRequest(
            contract=step.contract,
            action=step.action,
            quantity=step.quantity,
            order_type="MKT",
            cycle_id=cycle_id,
            ref_seed="uncovered",
        )
        verdict = await self.sender.send(request, closing=True)
        self._event(
            "protection_close",
            f"{step.why}: {step.action} {step.quantity:g} {step.contract.key} "
            + ("sent as " + str(verdict.order_ref) if verdict.accepted else "REFUSED: ")
            + "; ".join(verdict.reasons),
            "warning" if verdict.accepted else "critical",
            verdict.order_ref,
            cycle_id,
        )
        return verdict

    def _event(
        self, kind: str, reason: str, severity: str, ref: str | None, cycle_id: int | None
    ) -> None:
        log.log(logging.CRITICAL if severity == "critical" else logging.WARNING, reason)
        self.store.post(
            log_safety_event, "commander", kind, reason, severity, order_ref=ref, cycle_id=cycle_id
        )


def _carry(step: Protect | Close, carried: Mapping[str, Protect | Close]) -> Protect | Close:
    """What the replaced orders' plan said (their prices; or a close, when the market was
    through their stop) carried over to the cover planned after their cancel, for the
    quantity the broker shows now."""
    old = carried.get(step.contract.key)
    if old is None:
        return step
    if isinstance(old, Close):
        return Close(old.contract, old.action, step.quantity, old.why)
    if isinstance(step, Close):
        return Protect(old.contract, old.action, step.quantity, old.stop, old.take_profit, old.why)
    return dataclasses.replace(step, stop=old.stop, take_profit=old.take_profit)
