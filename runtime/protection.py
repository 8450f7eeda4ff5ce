"""A position never stays at the broker without its stop: the response to a refused child.

When the broker refuses a protective child (a stop-loss or take-profit of a bracket), the
parent is cancelled with its other children, and whatever of it filled is closed at once with a
market order through the execution gate (exposure-reducing, so it passes when new exposure
would not); each step is a safety event. Nothing here bypasses the gate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from data_lake import DONE_BROKER_STATES, Contract, Store, get_intent, log_safety_event
from skills.brackets import (
    STOP_SUFFIX,
    TAKE_PROFIT_SUFFIX,
    Protection,
    is_protective_ref,
    parent_ref_of,
)
from skills.execution_gate import GateContext, GateVerdict, OrderRequest

from .broker import Broker
from .config import Config
from .heartbeat import Clock

__all__ = ["ProtectionGuard", "lift_protection", "protective_guards"]

log = logging.getLogger("runtime.protection")

POLL_S = 0.05  # how often the broker's own view is re-read while waiting (bounded by timeouts)


class Sender(Protocol):
    async def send(
        self,
        request: OrderRequest,
        protection: Protection | None = None,
        *,
        closing: bool = False,
    ) -> GateVerdict: ...


class ProtectionGuard:
    """Closes the position of a parent whose protective child the broker refused."""

    def __init__(
        self, *, cfg: Config, store: Store, broker: Broker, sender: Sender, clock: Clock
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.broker = broker
        self.sender = sender
        self.clock = clock
        self._handled: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def child_rejected(self, child_ref: str, code: int, msg: str) -> None:
        """The broker refused a protective child (called from the broker's error event)."""
        parent_ref = parent_ref_of(child_ref)
        if parent_ref in self._handled:
            return
        self._handled.add(parent_ref)
        self._event(
            "protection_rejected",
            f"protective order {child_ref} refused by the broker ({code}: {msg}): its parent "
            f"{parent_ref} must not leave a position without it; cancelling it and closing "
            "whatever filled",
            "critical",
            child_ref,
        )
        task = asyncio.get_running_loop().create_task(
            self._close(parent_ref, child_ref), name=f"protect-{parent_ref}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def busy(self) -> bool:
        """True while a close of an unprotected position is under way."""
        return bool(self._tasks)

    async def wait_idle(self, timeout: float) -> None:
        """Wait (bounded) for running closes to finish (shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def _close(self, parent_ref: str, child_ref: str) -> None:
        try:
            await asyncio.wait_for(
                self._close_now(parent_ref, child_ref), self.cfg.loop.max_cycle_s
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("closing unprotected %s failed", parent_ref)
            self._event(
                "protection_close_failed",
                f"the position of {parent_ref} (child {child_ref} refused) could not be closed: "
                f"{type(exc).__name__}: {exc}; the watchdog's limits still apply",
                "critical",
                parent_ref,
            )

    async def _close_now(self, parent_ref: str, child_ref: str) -> None:
        timeout = self.cfg.broker.request_timeout_s
        child = await self.store.run(get_intent, child_ref, timeout=timeout)
        standalone = child is not None and not child["parent_ref"]  # a cover (no parent)
        family = [parent_ref + STOP_SUFFIX, parent_ref + TAKE_PROFIT_SUFFIX]
        if not standalone:
            family.insert(0, parent_ref)
        for ref in family:
            if ref != child_ref:
                self.broker.cancel(ref)  # only what is still working; done orders are skipped
        deadline = self.clock.monotonic() + timeout
        while self.clock.monotonic() < deadline and any(
            self.broker.order_status(r) not in (None, *DONE_BROKER_STATES) for r in family
        ):
            await asyncio.sleep(POLL_S)
        if standalone and child is not None:
            # a cover guards a position that exists already: close what it was to guard
            intent: Mapping[str, Any] = child
            filled = float(child["quantity"])
            close_action = str(child["action"])
        else:
            filled = self.broker.order_filled(parent_ref)
            if filled <= 0:
                self._event(
                    "protection_close",
                    f"parent {parent_ref} cancelled before any fill: no position to close",
                    "warning",
                    parent_ref,
                )
                return
            found = await self.store.run(get_intent, parent_ref, timeout=timeout)
            if found is None:
                raise RuntimeError(f"no stored intent for {parent_ref}")
            intent = found
            close_action = "SELL" if intent["action"] == "BUY" else "BUY"
        request = OrderRequest(
            contract=Contract.from_row(intent),
            action=close_action,
            quantity=filled,
            order_type="MKT",
            source=intent["source"],
            cycle_id=intent["cycle_id"],
            ref_seed="unprotected-" + parent_ref,
        )
        signed = -filled if close_action == "BUY" else filled  # the position being closed
        while self.clock.monotonic() < deadline:  # the fill's position update must land first
            held = next((p.quantity for p in self.broker.positions() if p.key == request.key), 0)
            if held * signed > 0 and abs(held) >= filled:
                break
            await asyncio.sleep(POLL_S)
        verdict = await self.sender.send(request, closing=True)
        self._event(
            "protection_close",
            f"closing {request.action} {filled:g} {request.key} of unprotected {parent_ref}: "
            + ("sent as " + str(verdict.order_ref) if verdict.accepted else "REFUSED: ")
            + "; ".join(verdict.reasons),
            "critical" if not verdict.accepted else "warning",
            verdict.order_ref or parent_ref,
        )

    def _event(self, kind: str, reason: str, severity: str, ref: str | None) -> None:
        log.log(logging.CRITICAL if severity == "critical" else logging.WARNING, reason)
        self.store.post(log_safety_event, "commander", kind, reason, severity, order_ref=ref)


def protective_guards(request: OrderRequest, ctx: GateContext) -> tuple[str, ...]:
    """The orderRefs of the protective orders resting on the contract of a request that
    reduces the position they guard (empty: the request opens, or nothing guards it)."""
    held = ctx.holdings.get(request.key)
    if held is None or held.quantity == 0 or (held.quantity > 0) == (request.action == "BUY"):
        return ()
    return tuple(
        w.order_ref
        for w in ctx.working
        if w.key == request.key
        and is_protective_ref(w.order_ref)
        and (w.signed_quantity > 0) == (request.action == "BUY")
    )


async def lift_protection(
    broker: Broker,
    request: OrderRequest,
    ctx: GateContext,
    guards: Sequence[str],
    check: Callable[[OrderRequest, GateContext], list[str]],
    *,
    timeout: float,
    clock: Clock,
) -> str | None:
    """Cancel the protective orders guarding a position before a close by signal (a close
    beside a resting stop could oversell); return why not (they then stay), or None once every
    one of them is confirmed cancelled; only when the gate would accept the close without
    them. (What a partial close leaves is covered again by the caller: skills.protective's
    `cover_rest`.)"""
    without = dataclasses.replace(
        ctx, working=tuple(w for w in ctx.working if w.order_ref not in guards)
    )
    reasons = check(request, without)
    if reasons:
        return "; ".join(reasons) + " (its protective orders stay)"
    foreign = [r for r in guards if not broker.owns_working(r)]
    if foreign:
        return f"protective orders {', '.join(foreign)} are not this session's: not cancelled"
    for ref in guards:
        broker.cancel(ref)
    deadline = clock.monotonic() + timeout
    while clock.monotonic() < deadline and any(
        broker.order_status(r) not in DONE_BROKER_STATES for r in guards
    ):
        await asyncio.sleep(POLL_S)
    filled = [r for r in guards if broker.order_status(r) == "Filled"]
    if filled:
        return f"protective order {', '.join(filled)} filled meanwhile: nothing left to close"
    pending = [r for r in guards if broker.order_status(r) not in DONE_BROKER_STATES]
    if pending:
        return (
            f"protective orders {', '.join(pending)} not confirmed cancelled within "
            f"{timeout:g}s: the close is not sent beside them"
        )
    return None
