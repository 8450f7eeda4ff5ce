"""One cycle: Sense -> Think -> Decide -> Act, and its decision snapshot.

Rules mode (default): merged swarm signals -> conflicts dropped -> confidence and consensus
thresholds -> fractional Kelly size -> portfolio dollar-delta check -> the execution gate.
LLM mode (`[commander] mode = "llm"`) replaces Decide/Act by a bounded tool-use loop whose
only way to trade is the same gate (runtime/llm_commander.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from data_lake import (
    SNAPSHOT_SCHEMA_VERSION,
    Contract,
    StorageUnavailable,
    Store,
    finish_cycle,
    flat_dict,
    last_safety_event,
    log_safety_event,
    record_decisions,
    redact,
    save_snapshot,
    unresolved_intents,
    working_orders,
)
from skills.brackets import (
    Protection,
    is_protective_ref,
    place_bracket_with_guard,
    reference_price,
    with_children,
)
from skills.execution_gate import (
    GateContext,
    GateState,
    GateVerdict,
    Holding,
    OrderRequest,
    evaluate,
    order_ref_for,
    place_order_with_guard,
    refuse,
)
from skills.math_core import MathInputError, kelly_criterion
from skills.protective import cover_rest, step_doc
from skills.swarm_core import (
    LoadedTemplate,
    MergedSignal,
    SwarmResult,
    consult_swarm,
    merged_json,
    signal_json,
    spent_today_usd,
)
from skills.swarm_models import InstanceConfig, MarketContext
from skills.swarm_providers import Provider, SwarmBudget

from .breaker import BreakerState, CircuitBreaker
from .broker import Broker, BrokerNotReady
from .config import CommanderConfig, Config
from .cover_keeper import CoverKeeper
from .decision import Decision, decision_row
from .gate_context import THROTTLE_REENABLED, build_gate_context, inputs_unavailable
from .heartbeat import Clock
from .llm_commander import LlmCommander
from .market_hours import exchange_day, exchange_day_start
from .protection import lift_protection, protective_guards
from .replay_record import bracket_doc, config_hash, context_doc, state_doc, stored_config
from .restart_window import RestartWindow
from .sense import MarketSensor, SenseSpec
from .trading_pause import TradingPause

__all__ = ["Commander", "CycleReport", "Decision", "decide_rules", "protection_for"]

log = logging.getLogger("runtime.commander")


@dataclass
class CycleReport:
    cycle_id: int
    status: str = "ok"
    skipped: str | None = None
    swarm: SwarmResult | None = None
    decisions: list[Decision] = field(default_factory=list)
    verdicts: list[GateVerdict] = field(default_factory=list)
    recorded: int = 0  # how many of `decisions` are already in the database

    @property
    def orders(self) -> int:
        return sum(1 for v in self.verdicts if v.accepted)


def _risk_per_unit(m: MergedSignal, price: float) -> float:
    if m.contract.is_option:
        if m.action == "SELL" and m.contract.right == "P":
            return m.contract.strike * 100.0  # cash-secured: the most a short put can lose
        return price * 100.0
    return price


def decide_rules(
    merged: Sequence[MergedSignal],
    cfg: Config,
    net_liq: float,
    holdings: Mapping[str, Holding],
    context: MarketContext,
    working: frozenset[tuple[str, str]] = frozenset(),
    protected: frozenset[str] = frozenset(),
) -> list[Decision]:
    """Turn merged signals into sized decisions (or refusals with reasons). Pure.

    `working` holds (contract key, action) pairs that already have an order working;
    `protected` the contract keys whose position a protective order of ours guards."""
    c = cfg.commander
    out: list[Decision] = []
    delta_now = sum(h.dollar_delta for h in holdings.values())
    for m in merged:
        base: dict[str, Any] = dict(
            contract=m.contract,
            action=m.action,
            order_type=m.order_type,
            sources=m.sources,
            limit_price=m.limit_price,
            inputs={
                "confidence": m.confidence,
                "consensus": m.consensus,
                "win_probability": m.win_probability,
                "payoff_ratio": m.payoff_ratio,
                "signal_quantity": m.quantity,
                "net_liquidation": net_liq,
            },
        )

        def refuse(reason: str, base: dict[str, Any] = base) -> Decision:
            return Decision(quantity=0, accepted=False, reason=reason, **base)

        if m.conflict:
            out.append(refuse("conflict: instances disagree on the side for this underlying"))
            continue
        if (m.key, m.action) in working:
            out.append(refuse("an order for this contract and side is already working"))
            continue
        if m.confidence < c.min_confidence:
            out.append(refuse(f"confidence {m.confidence:.2f} below {c.min_confidence}"))
            continue
        if m.consensus < c.min_consensus:
            out.append(refuse(f"consensus {m.consensus} below {c.min_consensus}"))
            continue
        held = holdings.get(m.key)
        signed = 1 if m.action == "BUY" else -1
        if held is not None and held.quantity * signed < 0:  # closing: no Kelly needed
            qty = float(min(abs(held.quantity), m.quantity or abs(held.quantity)))
            out.append(
                Decision(
                    quantity=qty,
                    accepted=True,
                    reason=f"reduces the {held.quantity:g} held"
                    + (
                        "; its protective orders are cancelled first"
                        + (", the rest covered again" if qty < abs(held.quantity) else "")
                        if m.key in protected
                        else ""
                    ),
                    **base,
                )
            )
            continue
        mc = m.contract
        sym = context.symbol(mc.symbol)
        opt = context.option(mc) if mc.is_option else None
        price = m.limit_price or (opt.mid if opt else (sym.ask if sym else 0.0))
        if not price or price <= 0:
            out.append(refuse("no price to size the order"))
            continue
        p = m.win_probability if m.win_probability is not None else m.confidence
        b = m.payoff_ratio if m.payoff_ratio is not None else 1.0
        try:
            f = kelly_criterion(p, b, c.kelly_fraction, c.kelly_cap)
        except MathInputError as exc:
            out.append(refuse(f"Kelly inputs invalid: {exc}"))
            continue
        units = math.floor(f * net_liq / _risk_per_unit(m, price)) if f > 0 else 0
        qty = float(min(units, m.quantity) if m.quantity else units)
        if qty < 1:
            out.append(refuse(f"Kelly size below one unit (f={f:.4f}, net liq {net_liq:,.0f})"))
            continue
        if mc.is_option:
            delta = opt.delta if opt else 0.0
            und = sym.last if sym else 0.0
            added = signed * qty * delta * 100.0 * und
        else:
            added = signed * qty * price
        after = delta_now + added
        if abs(after) > cfg.risk.max_portfolio_delta and abs(after) > abs(delta_now):
            out.append(
                refuse(
                    f"portfolio dollar delta would be {after:,.0f} "
                    f"(limit ±{cfg.risk.max_portfolio_delta:,.0f})"
                )
            )
            continue
        delta_now = after
        out.append(
            Decision(
                quantity=qty,
                accepted=True,
                kelly_fraction=f,
                reason=f"Kelly f={f:.4f} of net liq {net_liq:,.0f} -> {qty:g}",
                **base,
            )
        )
    return out


def sense_spec(instances: Sequence[InstanceConfig]) -> SenseSpec:
    symbols = tuple(dict.fromkeys(s for i in instances for s in i.symbols))
    snipers = [i for i in instances if i.template == "vol_sniper.md"]
    if not snipers:
        return SenseSpec(symbols)
    p = [i.parameters for i in snipers]
    return SenseSpec(
        symbols,
        min(float(x["min_iv_rank"]) for x in p) / 100.0,
        min(int(x["min_dte"]) for x in p),
        max(int(x["max_dte"]) for x in p),
    )


class Commander:
    """Runs cycles for the main loop. One instance per process; cycles never overlap."""

    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        broker: Broker,
        breaker: CircuitBreaker,
        provider: Provider,
        instances: Sequence[InstanceConfig],
        templates: Mapping[str, LoadedTemplate],
        gate_state: GateState,
        clock: Clock,
        watchdog_alive: Callable[[], bool],
        cancel: asyncio.Event,
        phase: Callable[[str], None] = lambda p: None,
        wall_now: Callable[[], dt.datetime] | None = None,
        llm_client: Any = None,
        stopping: Callable[[], bool] = lambda: False,
        protection_busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.broker = broker
        self.breaker = breaker
        self.provider = provider
        self.instances = list(instances)
        self.templates = dict(templates)
        self.gate_state = gate_state
        self.clock = clock
        self.watchdog_alive = watchdog_alive
        self.cancel = cancel
        self.phase = phase
        # the wall clock comes from the injected clock too (exchange day, market hours,
        # snapshot times): a replay reads the recorded values instead
        self.wall_now = wall_now or (lambda: dt.datetime.fromtimestamp(clock.wall(), dt.UTC))
        self.llm_client = llm_client
        self.stopping = stopping
        self.sensor = MarketSensor(broker)
        self.spec = sense_spec(self.instances)
        self._open_cache: dict[str, tuple[str, bool]] = {}
        self._deadline = float("inf")  # monotonic end of the running cycle (order pacing)
        self.pause = TradingPause(
            RestartWindow.from_config(cfg.broker), broker, lambda: self.wall_now(), store
        )
        self._gate_calls: list[dict[str, Any]] = []  # this cycle's gate inputs (for replay)
        # every position covered by its stops, before anything is decided (the tightest
        # protection any instance asks for covers a position no bracket covers)
        self.keeper = CoverKeeper(
            cfg=cfg,
            store=store,
            broker=broker,
            sender=self,
            gate_state=gate_state,
            clock=clock,
            protection=self.protection_for([i.id for i in self.instances]),
            busy=protection_busy,
        )

    async def run_cycle(self, cycle_id: int) -> CycleReport:
        self._deadline = self.clock.monotonic() + self.cfg.loop.max_cycle_s
        report = CycleReport(cycle_id)
        t0 = self.clock.monotonic()
        self._gate_calls = []
        config = stored_config(self.cfg)  # every cycle: a secret registered late is redacted too
        doc: dict[str, Any] = {
            "schema_version": SNAPSHOT_SCHEMA_VERSION,
            "cycle_id": cycle_id,
            "started_at": self.wall_now().isoformat(),
            "mode": self.cfg.commander.mode,
            "config_hash": config_hash(config),
            "config": config,
            "replay": {
                "gate_calls": self._gate_calls,
                # the instances' protective overrides: a replay rebuilds the brackets with them
                "instances": [i.model_dump(mode="json") for i in self.instances],
            },
        }
        try:
            await self._cycle(report, doc)
        except StorageUnavailable as exc:  # no trading without a working audit trail
            report.status, report.skipped = "skipped", f"database unavailable: {exc}"
        except asyncio.CancelledError:
            if self.stopping():
                report.status, report.skipped = "interrupted", "cut short by a stop (SIGTERM)"
            else:  # say what it was waiting for when that was IB's historical pacing
                pacing = self.broker.history_pacing()
                report.status = "timeout"
                report.skipped = "cancelled at max_cycle_s" + (f" while {pacing}" if pacing else "")
            raise
        except Exception as exc:
            report.status, report.skipped = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if report.status == "ok" and self.stopping():
                report.status, report.skipped = "interrupted", "a stop arrived during the cycle"
            doc["finished_at"] = self.wall_now().isoformat()
            doc["status"] = report.status
            doc["skipped"] = report.skipped
            self._persist(report, doc)
            self._log_cycle(report, (self.clock.monotonic() - t0) * 1000)
        return report

    async def _cycle(self, report: CycleReport, doc: dict[str, Any]) -> None:
        # contracts IB refused market data for in the last cycle (354 ...) are tried again
        self.broker.begin_cycle(report.cycle_id)
        status = self.breaker.status()
        doc["breaker"] = {"state": status.state.value, "reason": status.reason}
        if self.broker.ready:  # even when HALTED: intents follow the broker every cycle
            try:
                await self._sync_with_broker()
            except (TimeoutError, ConnectionError) as exc:
                report.status, report.skipped = "skipped", f"broker sync failed: {exc!r}"
                return
        if status.state is BreakerState.HALTED:
            report.status, report.skipped = "skipped", f"breaker HALTED: {status.reason}"
            return
        if not self.broker.ready:
            report.status, report.skipped = "skipped", "broker not connected and reconciled"
            return
        paused = self.pause.reasons()  # restart window; data not yet proven after a reconnect
        self.pause.record(paused)
        if paused:
            report.status, report.skipped = "skipped", "; ".join(paused)
            return
        await self._keep_covered(report.cycle_id, status.state.value, doc)
        if not await self._anything_open():  # no LLM spend when nothing can be traded
            report.status, report.skipped = "skipped", "every instrument is closed"
            return
        self.phase("sense")
        now = self.wall_now()
        context = await self.sensor.context(self.spec, now)
        values = self.broker.account_values()
        holdings = await self.broker.holdings()
        self.broker.snapshot_account("cycle")  # equity and PnL over time, one row per cycle
        doc["account"] = values
        doc["positions"] = {k: flat_dict(h) for k, h in holdings.items()}
        doc["context"] = dataclasses.asdict(context)
        doc["replay"]["sensed"] = {"wall": now.isoformat(), "monotonic": self.clock.monotonic()}
        self.phase("think")
        budget = SwarmBudget(
            self.cfg.swarm.max_tokens_per_cycle,
            self.cfg.swarm.max_usd_per_cycle,
            self.cfg.swarm.max_usd_per_day,
            await spent_today_usd(
                self.store,
                self.cfg.data.write_timeout_s,
                since=exchange_day_start(self.wall_now()).isoformat(),
            ),
            prices=self.cfg.swarm.prices,
        )
        swarm = await consult_swarm(
            self.instances,
            self.templates,
            context,
            self.provider,
            limits=self.cfg.risk.model_dump(),
            max_concurrency=self.cfg.swarm.max_concurrency,
            deadline_s=self.cfg.swarm.deadline_s,
            budget=budget,
            store=self.store,
            cycle_id=report.cycle_id,
            cancel=self.cancel,
            cache_warmup=self.cfg.swarm.cache_warmup,
        )
        report.swarm = swarm
        doc["swarm"] = _swarm_doc(swarm)
        self.phase("decide")
        if self.cfg.commander.mode == "llm":
            llm = LlmCommander(self)
            doc["replay"]["llm_turns"] = llm.turns
            decisions, verdicts, transcript = await llm.run(
                report.cycle_id, swarm, context, holdings, values
            )
            report.decisions, report.verdicts = decisions, verdicts
            report.recorded = len(decisions)  # LLM mode records each decision before acting
            doc["llm_transcript"] = transcript
        else:
            net_liq = values.get("NetLiquidation", 0.0)
            working, protected = await self._working()
            doc["replay"]["decide"] = {
                "net_liquidation": net_liq,
                "working": sorted([key, action] for key, action in working),
                "protected": sorted(protected),
            }
            decisions = decide_rules(
                swarm.merged, self.cfg, net_liq, holdings, context, working, protected
            )
            report.decisions = decisions
            ids = await self.store.run(
                record_decisions,
                report.cycle_id,
                [decision_row(d) for d in decisions],
                timeout=self.cfg.data.write_timeout_s,
            )
            doc["replay"]["decision_ids"] = list(ids)
            report.recorded = len(decisions)
            self.phase("act")
            for d, decision_id in zip(decisions, ids, strict=True):
                if d.accepted:
                    report.verdicts.append(await self.act(d, report.cycle_id, decision_id))
        doc["decisions"] = [flat_dict(d) for d in report.decisions]
        doc["verdicts"] = [dataclasses.asdict(v) for v in report.verdicts]

    async def _sync_with_broker(self) -> None:
        """Every cycle: apply a person's throttle re-enable, and move stored intents to the
        broker's state (fills and cancels seen by any session, executions not yet stored)."""
        timeout = self.cfg.data.write_timeout_s
        row = await self.store.run(last_safety_event, THROTTLE_REENABLED, timeout=timeout)
        if row is not None and int(row["id"]) > self.gate_state.reenabled_by:
            self.gate_state.reenabled_by = int(row["id"])
            if self.gate_state.execution_throttle_latched:
                self.gate_state.reenable_executions()
                log.warning("execution throttle re-enabled by a person: %s", row["reason"])
                self.store.post(
                    log_safety_event,
                    "gate",
                    "execution_throttle_applied",
                    f"re-enable record {row['id']} applied: {row['reason']}",
                    "info",
                )
        await self.broker.sync_intents()

    async def cover_now(self) -> None:
        """One cover keeper pass between cycles (after an entry of ours filled in part): only
        with the broker ready and nothing pausing trading; the breaker as it is now."""
        if not self.broker.ready or self.pause.reasons():
            return
        await self.keeper.keep(
            None, breaker=self.breaker.status().state.value, blocked=await self._blocked()
        )

    async def _keep_covered(self, cycle_id: int, breaker: str, doc: dict[str, Any]) -> None:
        """Cover every position exactly by its stops (runtime.cover_keeper); a broker that
        cannot be read is written down and the cycle goes on (its own reads decide)."""
        self.phase("protect")
        try:
            kept = await self.keeper.keep(cycle_id, breaker=breaker, blocked=await self._blocked())
        except (TimeoutError, ConnectionError, BrokerNotReady) as exc:
            log.warning("protective cover not checked this cycle: %r", exc)
            doc["protection"] = {"unchecked": repr(exc)}
            return
        if kept.inputs is not None:  # what the keeper read and planned, for replay
            doc["replay"]["cover"] = {
                "inputs": kept.inputs.doc(),
                "steps": [step_doc(s) for s in kept.planned],
            }
        if kept.steps:
            doc["protection"] = {
                "steps": [step_doc(s) for s in kept.steps],
                "verdicts": [dataclasses.asdict(v) for v in kept.verdicts],
            }

    async def _blocked(self) -> frozenset[str]:
        """Contract keys with an unresolved intent (after queued writes)."""
        rows = await self.store.run(unresolved_intents, timeout=self.cfg.data.write_timeout_s)
        return frozenset(Contract.from_row(r).key for r in rows)

    async def _pace(self) -> None:
        """Wait for the next free slot of the per-second order rate, if it comes before the
        cycle's deadline (a normal cycle never trips its own rate limit); else the gate
        refuses on the rate as before."""
        wait = self.gate_state.slot_wait(self.clock.monotonic(), self.cfg.risk)
        if wait > 0 and self.clock.monotonic() + wait < self._deadline:
            await asyncio.sleep(wait + 0.001)

    async def _working(self) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
        """(contract key, action) of the commander's working orders, and the contract keys
        its protective orders guard (after queued writes)."""
        rows = await self.store.run(
            working_orders, "commander", timeout=self.cfg.data.write_timeout_s
        )

        def key(r: Mapping[str, Any]) -> str:
            return Contract.from_row(r).key

        return (
            frozenset((key(r), r["action"]) for r in rows if not is_protective_ref(r["order_ref"])),
            frozenset(key(r) for r in rows if is_protective_ref(r["order_ref"])),
        )

    async def _anything_open(self) -> bool:
        """True when at least one of the swarm's underlyings is inside its liquid hours."""
        if self.cfg.loop.trade_outside_liquid_hours:
            return True
        for symbol in self.spec.symbols:
            probe = OrderRequest(
                contract=Contract.stock(symbol), action="BUY", quantity=1, order_type="MKT"
            )
            if await self._market_open(probe):
                return True
        return False

    def protection_for(self, sources: Sequence[str]) -> Protection | None:
        return protection_for(self.cfg.commander, self.instances, sources)

    async def act(self, d: Decision, cycle_id: int, decision_id: int | None = None) -> GateVerdict:
        """Send one decision through the gate (checking the breaker right before); an opening
        order carries its protective children when protection is configured."""
        return await self.send(d.request(cycle_id, decision_id), self.protection_for(d.sources))

    async def send(
        self,
        request: OrderRequest,
        protection: Protection | None = None,
        *,
        closing: bool = False,
    ) -> GateVerdict:
        """Send one request through the gate, as a bracket when `protection` is given and the
        request opens (or increases) a position. `closing`: a close of an unprotected
        position (runtime.protection) goes out even while the cycle is being cancelled."""
        cycle_id = request.cycle_id
        wall = self.wall_now()
        record: dict[str, Any] = {
            "request": flat_dict(request),
            "wall": wall.isoformat(),
            "day": exchange_day(wall),
        }
        if protection is not None:
            record["protection"] = dataclasses.asdict(protection)
        if not closing:  # a decision's order (a protection close is not replayed)
            self._gate_calls.append(record)  # what the gate read, for replay
        if self.cancel.is_set() and not closing:  # a stop or a breaker trip: nothing new
            reason = "cycle cancelled (stop or breaker trip): no new orders"
            record["suppressed"] = reason
            self.store.post(
                log_safety_event,
                "commander",
                "order_suppressed",
                reason,
                "info",
                details={"request": flat_dict(request)},
                cycle_id=cycle_id,
            )
            return GateVerdict(False, None, (reason,))
        await self._pace()
        blocked = await self._blocked()
        ctx = await self._context(request, blocked, record)
        if isinstance(ctx, GateVerdict):
            return ctx
        # a close by signal of a protected position: its children go first, never beside it
        # (a close of an unprotected part, `closing`, goes beside the other parts' stops: the
        # gate counts them, and together they never exceed the position)
        guards = () if closing else protective_guards(request, ctx)
        if guards:
            refused = await lift_protection(
                self.broker,
                request,
                ctx,
                guards,
                lambda r, c: evaluate(r, c, self.gate_state, self.cfg.risk, record["day"]),
                timeout=self.cfg.broker.request_timeout_s,
                clock=self.clock,
            )
            if refused is not None:
                ref = order_ref_for(request)
                refuse(self.store, request, ref, [refused])
                record["protection_kept"] = refused
                return GateVerdict(False, ref, (refused,))
            record["protection_lifted"] = list(guards)
            rest = cover_rest(request, ctx.holdings[request.key].quantity, ctx.working, guards)
            if rest is not None:  # what the close leaves keeps its stop, placed before it
                cover = await self.keeper.cover(rest, cycle_id, ctx.breaker)
                record["protection_rest"] = dataclasses.asdict(cover)
            ctx = await self._context(request, blocked, record)
            if isinstance(ctx, GateVerdict):
                await self._unprotected(request, guards, ctx.reasons)
                return ctx
        record["context"] = context_doc(ctx)
        record["state"] = state_doc(self.gate_state)

        def send_clock() -> float:  # the moment the order was counted as sent
            record["sent_at"] = now = self.clock.monotonic()
            return now

        if protection is not None and _opens(request, ctx):
            q = ctx.quote
            ref_price = reference_price(request, q.bid, q.ask) if q else None
            bracket = with_children(request, ref_price or 0.0, protection)
            record["bracket"] = bracket_doc(bracket, ctx, self.cfg.risk)  # for replay and why
            verdict = await place_bracket_with_guard(
                bracket,
                ctx,
                self.gate_state,
                self.cfg.risk,
                self.store,
                self.broker,
                record["day"],
                intent_timeout_s=self.cfg.data.write_timeout_s,
                clock=send_clock,
            )
        else:
            verdict = await place_order_with_guard(
                request,
                ctx,
                self.gate_state,
                self.cfg.risk,
                self.store,
                self.broker,
                record["day"],
                intent_timeout_s=self.cfg.data.write_timeout_s,
                clock=send_clock,
            )
            if guards and not verdict.accepted:
                await self._unprotected(request, guards, verdict.reasons)
        record["verdict"] = dataclasses.asdict(verdict)
        return verdict

    async def _unprotected(
        self, request: OrderRequest, guards: Sequence[str], why: Sequence[str]
    ) -> None:
        """The protective orders were cancelled for a close that then did not go out: cover
        the position again at once (runtime.cover_keeper), and say what is left uncovered."""
        try:
            kept = await self.keeper.keep(
                request.cycle_id, breaker=self.breaker.status().state.value
            )
            covered = any(v.accepted for v in kept.verdicts)
        except (TimeoutError, ConnectionError, BrokerNotReady) as exc:
            log.warning("covering %s again failed: %r", request.key, exc)
            covered = False
        reason = (
            f"{request.key}: protective orders {', '.join(guards)} were cancelled for a close "
            f"that was then refused ({'; '.join(why)}): "
            + (
                "the position is covered again"
                if covered
                else "the position is UNPROTECTED until a cycle covers it again (the "
                "watchdog's limits still apply)"
            )
        )
        log.log(logging.WARNING if covered else logging.CRITICAL, reason)
        self.store.post(
            log_safety_event,
            "commander",
            "protection_lifted",
            reason,
            "warning" if covered else "critical",
            order_ref=order_ref_for(request),
            cycle_id=request.cycle_id,
        )

    async def _context(
        self, request: OrderRequest, blocked: frozenset[str], record: dict[str, Any]
    ) -> GateContext | GateVerdict:
        """The gate's view for this request, or a refusal when the broker cannot show it."""
        try:
            market_open = await self._market_open(request)
            return await build_gate_context(
                self.broker,
                request,
                breaker=self.breaker.status().state.value,
                watchdog_alive=self.watchdog_alive(),
                market_open=market_open,
                now=self.clock.monotonic(),
                blocked=blocked,
                paused=self.pause.reasons(),
            )
        except (TimeoutError, ConnectionError) as exc:  # the world cannot be seen: no order
            verdict = inputs_unavailable(self.store, request, exc, request.cycle_id)
            record["unavailable"] = verdict.reasons[0]
            return verdict

    async def _market_open(self, r: OrderRequest) -> bool:
        if self.cfg.loop.trade_outside_liquid_hours:
            return True
        contract = await self.broker.qualify(r.contract)
        if contract is None:
            return False
        now = self.wall_now()
        key = f"{r.key}@{now:%Y%m%d%H%M}"
        cached = self._open_cache.get(r.key)
        if cached and cached[0] == key:
            return cached[1]
        is_open = await self.broker.market_open(contract, now)
        self._open_cache[r.key] = (key, is_open)
        return is_open

    def _log_cycle(self, report: CycleReport, duration_ms: float) -> None:
        """One structured line per cycle (key=value, journald- and grep-friendly)."""
        swarm = report.swarm
        refused = [v for v in report.verdicts if not v.accepted]
        log.info(
            "cycle id=%d outcome=%s signals=%d abstains=%d decisions=%d accepted=%d orders=%d "
            "refusals=%d llm_usd=%.4f duration_ms=%.0f%s",
            report.cycle_id,
            report.status,
            len(swarm.signals) if swarm else 0,
            len(swarm.abstains) if swarm else 0,
            len(report.decisions),
            sum(1 for d in report.decisions if d.accepted),
            report.orders,
            len(refused),
            swarm.cost_usd if swarm else 0.0,
            duration_ms,
            f" why={report.skipped!r}" if report.skipped else "",
        )

    def _persist(self, report: CycleReport, doc: dict[str, Any]) -> None:
        """Queue the cycle's records (decisions, snapshot, outcome): a busy database delays
        them, never drops them."""
        n_signals = len(report.swarm.signals) if report.swarm else 0
        unrecorded = report.decisions[report.recorded :]  # normally none: recorded before acting
        if unrecorded:
            self.store.post(
                record_decisions, report.cycle_id, [decision_row(d) for d in unrecorded]
            )
        self.store.post(
            save_snapshot,
            self.cfg.data_dir,
            report.cycle_id,
            doc,
            summary={
                "status": report.status,
                "signals": n_signals,
                "decisions": len(report.decisions),
                "orders": report.orders,
            },
        )
        self.store.post(
            finish_cycle,
            report.cycle_id,
            report.status,
            report.skipped,
            n_signals=n_signals,
            n_decisions=len(report.decisions),
            n_orders=report.orders,
        )


def protection_for(
    c: CommanderConfig, instances: Sequence[InstanceConfig], sources: Sequence[str]
) -> Protection | None:
    """The protective orders an opening order carries: the global `[commander]` keys, or the
    tightest override of the instances behind the decision (None: no protection)."""
    by_id = {i.id: i for i in instances}
    picked = [by_id[s] for s in sources if s in by_id]

    def tightest(key: str, default: float | None) -> float | None:
        found = [v for i in picked if (v := i.protection_override(key)) is not None]
        return min(found) if found else default

    stop = tightest("stop_loss_pct", c.stop_loss_pct or None)
    if stop is None:
        return None
    return Protection(
        stop_loss_pct=stop, take_profit_pct=tightest("take_profit_pct", c.take_profit_pct or None)
    )


def _opens(request: OrderRequest, ctx: GateContext) -> bool:
    """The request opens a position or adds to one (it does not reduce what is held)."""
    held = ctx.holdings.get(request.key)
    qty = held.quantity if held else 0.0
    return qty == 0 or (qty > 0) == (request.action == "BUY")


def _swarm_doc(swarm: SwarmResult) -> dict[str, Any]:
    return {
        "outcomes": [
            {
                "instance": o.instance_id,
                "provider": o.provider,
                "model": o.model,
                "status": o.status,
                "reason": o.abstain.reason if o.abstain else None,
                "prompt_hash": o.prompt_hash,
                "prompt": o.prompt,
                "raw": redact(o.raw),
                "usage": dataclasses.asdict(o.usage),
                "cost_usd": o.cost_usd,
                "latency_ms": o.latency_ms,
                "signals": [signal_json(s) for s in o.signals],
            }
            for o in swarm.outcomes
        ],
        "merged": [merged_json(m) for m in swarm.merged],
    }
