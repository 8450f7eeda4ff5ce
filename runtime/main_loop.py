"""The daemon: owns the event loop, the scheduler, the heartbeat, the watchdog child, shutdown.

Boot order (fail closed): open the database and breaker, load and validate the swarm, start
the heartbeat, start the watchdog child, connect and reconcile, READY=1, then schedule cycles
(one at a time, missed runs coalesced, each bounded by max_cycle_s). SIGTERM/SIGINT: stop
scheduling, cancel the swarm's calls, let an order in flight finish, record, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from data_lake import (
    DONE_BROKER_STATES,
    RefuseToStart,
    StorageUnavailable,
    Store,
    insert_cycle,
    last_cycle_id,
    log_safety_event,
    open_intents,
    register_secret,
)
from skills.brackets import is_protective_ref
from skills.execution_gate import GateState
from skills.swarm_core import LoadedTemplate, SwarmConfigError, load_instances
from skills.swarm_models import InstanceConfig
from skills.swarm_providers import AnthropicProvider, OfflineProvider, Provider

from .breaker import BreakerState, CircuitBreaker
from .broker import AccountModeError, Broker, BrokerError, BrokerNotReady, ClientIdInUse
from .commander import Commander
from .config import Config, Secrets
from .gate_context import THROTTLE_LATCHED, load_gate_state
from .heartbeat import (
    MAIN_HEARTBEAT,
    WATCHDOG_HEARTBEAT,
    Clock,
    SystemClock,
    is_same_process,
    read_heartbeat,
    sd_notify,
    write_heartbeat,
)
from .instance_lock import (
    ANOTHER_WATCHDOG,
    InstanceLock,
    LockHeld,
    account_lock_path,
    acquire,
    lock_holder,
    role_lock_path,
)
from .notify import Notifier, start_notifier
from .pacing_log import PACING_LOG, HistoryLog
from .preflight import KEY_MISSING, static_refusals
from .protection import ProtectionGuard
from .restart_window import RestartWindow

__all__ = [
    "MAIN_HEARTBEAT",
    "WATCHDOG_HEARTBEAT",
    "MainLoop",
    "StartRefused",
    "open_main_loop",
    "run_main_loop",
]

log = logging.getLogger("runtime.main_loop")


class StartRefused(RefuseToStart):
    """The main loop cannot be built: a config refusal, the database, or the swarm's files."""


async def run_main_loop(
    cfg: Config,
    config_path: str | Path,
    secrets: Secrets,
    *,
    clock: Clock | None = None,
    max_cycles: int | None = None,
    provider: Provider | None = None,
) -> int:
    """Build the main loop (`open_main_loop`) and run it until stopped; return the process
    exit code (2 when it cannot be built, with the reason on stderr)."""
    try:
        loop = await open_main_loop(
            cfg, config_path, secrets, clock=clock, max_cycles=max_cycles, provider=provider
        )
    except StartRefused as exc:
        print(exc, file=sys.stderr)
        return 2
    return await loop.run()


async def open_main_loop(
    cfg: Config,
    config_path: str | Path,
    secrets: Secrets,
    *,
    clock: Clock | None = None,
    max_cycles: int | None = None,
    provider: Provider | None = None,
) -> MainLoop:
    """Check the config, open the store, rebuild the gate's memory, load the swarm and build
    the main loop; raise StartRefused (with every reason) when any of it fails."""
    clock = clock or SystemClock()
    refusals = [r for r in static_refusals(cfg, secrets) if r != KEY_MISSING or provider is None]
    if refusals:
        raise StartRefused("\n".join(f"config: {reason}" for reason in refusals))
    try:
        store = await asyncio.to_thread(
            Store.open, cfg.data_dir, busy_timeout_ms=cfg.data.busy_timeout_ms, name="main"
        )
    except StorageUnavailable as exc:
        raise StartRefused(f"fatal: database unavailable: {exc}") from exc
    try:
        timeout = max(10.0, cfg.data.write_timeout_s)
        last_cycle = await store.run(last_cycle_id, timeout=timeout)
        # the gate's memory (daily count, rate windows, duplicate guard, throttle latch)
        # survives restarts: rebuilt from what was stored
        gate_state = await load_gate_state(
            store,
            cfg.risk,
            monotonic_now=clock.monotonic(),
            wall_now=dt.datetime.fromtimestamp(clock.wall(), dt.UTC),
            sources=("commander", "person"),
            client_id=cfg.broker.client_id,
            timeout=timeout,
        )
        instances, templates = load_instances(
            cfg.swarm.instances_dir, cfg.swarm.templates_dir, cfg.risk.model_dump()
        )
    except (StorageUnavailable, SwarmConfigError) as exc:
        await asyncio.to_thread(store.close, 5.0)
        what = "fatal: database unavailable: " if isinstance(exc, StorageUnavailable) else ""
        raise StartRefused(f"{what}{exc}") from exc
    register_secret(secrets.anthropic_api_key)
    if provider is None:
        provider = (
            AnthropicProvider(
                secrets.anthropic_api_key,
                secrets.anthropic_base_url,
                cfg.swarm.max_retries,
                cfg.swarm.call_timeout_s,
            )
            if cfg.swarm.provider == "anthropic"
            else OfflineProvider()
        )
    llm_client = None
    if cfg.commander.mode == "llm":
        from anthropic import AsyncAnthropic

        llm_client = AsyncAnthropic(
            api_key=secrets.anthropic_api_key,
            base_url=secrets.anthropic_base_url,
            max_retries=cfg.swarm.max_retries,
        )
    return MainLoop(
        cfg,
        config_path,
        secrets,
        store=store,
        gate_state=gate_state,
        last_cycle_id=last_cycle,
        provider=provider,
        instances=instances,
        templates=templates,
        llm_client=llm_client,
        clock=clock,
        max_cycles=max_cycles,
    )


class MainLoop:
    """The daemon, complete once built: its store (open), breaker, broker session (not yet
    connected) and commander. `run()` connects and cycles until stopped."""

    def __init__(
        self,
        cfg: Config,
        config_path: str | Path,
        secrets: Secrets,
        *,
        store: Store,
        gate_state: GateState,
        provider: Provider,
        instances: Sequence[InstanceConfig],
        templates: Mapping[str, LoadedTemplate],
        last_cycle_id: int = 0,
        llm_client: Any = None,
        clock: Clock | None = None,
        max_cycles: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = str(config_path)
        self.secrets = secrets
        self.clock = clock or SystemClock()
        self.max_cycles = max_cycles
        self.provider = provider
        self.data_dir = cfg.data_dir
        self.cycle = 0
        self.cycles_run = 0
        self.phase = "starting"
        self.stop = asyncio.Event()
        self.cancel = asyncio.Event()
        self.store = store
        self.gate_state = gate_state
        self.breaker = CircuitBreaker(self.data_dir, store)
        self.broker = Broker(
            cfg.broker,
            cfg.mode,
            secrets,
            store,
            source="main_loop",
            intent_sources=("commander", "person"),
            on_reject_streak=self._on_reject_streak,
            on_execution=self._on_execution,
            on_partial_fill=self._on_partial_fill,
            on_protective_reject=self._on_protective_reject,
            monotonic=self.clock.monotonic,
            # IB counts the historical requests of earlier processes too (restarts)
            history_log=HistoryLog(
                self.data_dir / PACING_LOG, self.clock.monotonic, self.clock.wall
            ),
        )
        self.commander = Commander(
            cfg=cfg,
            store=store,
            broker=self.broker,
            breaker=self.breaker,
            provider=provider,
            instances=instances,
            templates=templates,
            gate_state=gate_state,
            clock=self.clock,
            watchdog_alive=self.watchdog_alive,
            cancel=self.cancel,
            phase=self._set_phase,
            llm_client=llm_client,
            stopping=self.stop.is_set,
            protection_busy=lambda: self.protection.busy(),
        )
        self.protection = ProtectionGuard(
            cfg=cfg, store=store, broker=self.broker, sender=self.commander, clock=self.clock
        )
        self._child: subprocess.Popen[bytes] | None = None
        self._adopted = False  # the watchdog watching for us is one we adopted, not our child
        self._tasks: list[asyncio.Task[Any]] = []
        self._cycle_task: asyncio.Task[Any] | None = None
        self._last_cycle_id = last_cycle_id
        self._notifier: Notifier | None = None  # started by run()
        self._account_lock: InstanceLock | None = None
        self.restart_window = RestartWindow.from_config(cfg.broker)
        self._down_since: dt.datetime | None = None  # broker not back (ready and proven) since
        self._cover_soon = asyncio.Event()  # an entry filled in part: cover it between cycles

    # --- helpers ---------------------------------------------------------------------------
    def _set_phase(self, phase: str) -> None:
        self.phase = phase

    def _beat(self) -> None:
        try:
            write_heartbeat(
                self.data_dir / MAIN_HEARTBEAT,
                self.clock,
                self.cycle,
                self.phase,
                session=self._session(),
                waiting=self._waiting(),
                conditions=tuple(self.broker.conditions.lines()),
            )
        except OSError as exc:  # disk full: the watchdog will see a stale heartbeat; say why
            log.error("heartbeat not written: %s", exc)

    def _session(self) -> str:
        """The main loop's broker session, for `status`: connecting (before the first
        connect), reconnecting, proving data (reconnected, waiting for fresh ticks), or
        connected."""
        if not self.broker.ready:
            return "connecting" if self.phase in ("starting", "connecting") else "reconnecting"
        return "proving data" if self.broker.data_pause_reason() else "connected"

    def _waiting(self) -> str | None:
        """What `status` shows the main loop waiting on: the gateway's daily restart (its
        window while "now", the injected wall clock, is in it, and after it while the broker
        is still reconnecting or proving its data after a drop in the window), and IB's
        historical-data pacing (a wait under way, in the warm-up or a cycle)."""
        restart = self._restart_waiting()
        pacing = self.broker.history_pacing()
        if pacing:
            pacing = f"{self.phase}: {pacing}"
        return "; ".join(w for w in (restart, pacing) if w) or None

    def _restart_waiting(self) -> str | None:
        window = self.restart_window
        if window is None:
            return None
        now = dt.datetime.fromtimestamp(self.clock.wall(), dt.UTC)
        back = self._session() == "connected"
        if back:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
        span = window.current(now)
        if span is None and self._down_since is not None:
            last = window.latest_started(now)
            if last.start <= self._down_since < last.end:
                span = last
        return None if span is None else window.waiting_text(span)

    def watchdog_alive(self) -> bool:
        """The gate's `watchdog_alive`: the watchdog process exists (a spawned child that has
        exited counts as dead at once, whatever its last heartbeat says), its heartbeat is
        fresh, and it holds a broker session that polled the account within the timeout."""
        child = self._child
        if child is not None and child.poll() is not None:
            return False
        hb = read_heartbeat(self.data_dir / WATCHDOG_HEARTBEAT)
        if hb is None or hb.phase == "stopped":
            return False
        if child is not None and hb.pid != child.pid:
            return False  # an earlier watchdog's heartbeat: not the child we are running
        if child is None and is_same_process(hb) is False:
            return False  # a standalone watchdog whose process is gone (or its pid reused)
        now = self.clock.monotonic()
        timeout = self.cfg.watchdog.heartbeat_timeout_s
        polled = hb.account_poll_age(now)
        return (
            hb.age(now) <= timeout
            and hb.session == "connected"
            and polled is not None
            and polled <= timeout
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            self._beat()
            if (
                self._cycle_task is not None
                and self.breaker.status().state is BreakerState.HALTED
                and not self.cancel.is_set()
            ):
                log.warning("breaker HALTED during a cycle: cancelling in-flight LLM calls")
                self.cancel.set()
            if self.phase not in ("starting", "connecting"):
                sd_notify("WATCHDOG=1")
            await asyncio.sleep(self.cfg.loop.heartbeat_interval_s)

    def _spawn_watchdog(self) -> None:
        self._child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime",
                "watchdog",
                "--config",
                self.config_path,
                "--spawned",
            ],
            stdin=subprocess.DEVNULL,
        )
        log.info("watchdog started as child process %s", self._child.pid)

    async def _supervise_watchdog(self) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(0.2)
            if self._child is not None and self._child.poll() == ANOTHER_WATCHDOG:
                # a watchdog already watches this data dir (it outlived a main loop that was
                # killed): adopt it; watchdog_alive() judges it by heartbeat, pid and start
                pid = lock_holder(role_lock_path(self.data_dir, "watchdog"))  # its lock's holder
                running = f"a watchdog is already running (pid {pid})"
                log.warning(
                    "watchdog child %s stood down: %s: adopting it (a clean stop stops it too)",
                    self._child.pid,
                    running,
                )
                self._event("watchdog_adopted", f"{running}: adopted it", "info")
                self._child = None
                self._adopted = True
                continue
            if self._child is None and self.cfg.watchdog.spawn:
                hb = read_heartbeat(self.data_dir / WATCHDOG_HEARTBEAT)
                if hb is None or hb.phase == "stopped" or is_same_process(hb) is False:
                    log.error("the adopted watchdog is gone: starting our own")
                    self._event("watchdog_exit", "the adopted watchdog is gone", "critical")
                    self._spawn_watchdog()
                continue
            if self._child is not None and self._child.poll() is not None:
                # watchdog_alive() is already False (it polls the child itself): no new
                # positions from this moment until the new child holds a broker session
                code = self._child.returncode
                log.error("watchdog child exited with %s; restarting in %.0fs", code, delay)
                self._event(
                    "watchdog_exit",
                    f"watchdog child exited with {code}; restarting; no new positions until "
                    "it holds a broker session",
                    "critical",
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                self._spawn_watchdog()
            elif self.watchdog_alive():
                delay = 1.0

    async def _stop_adopted_watchdog(self) -> None:
        """A clean stop ends the watchdog we adopted as it ends our own child (with `[watchdog]
        spawn` the main loop runs the watchdog; one left by a killed main loop would otherwise
        outlive every stop). Only the process that wrote the watchdog's heartbeat, never a pid
        reused since; it stops cleanly (its SIGTERM handler), bounded."""
        hb = read_heartbeat(self.data_dir / WATCHDOG_HEARTBEAT)
        if hb is None or hb.phase == "stopped" or is_same_process(hb) is not True:
            return
        log.info("stopping the adopted watchdog (pid %s)", hb.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(hb.pid, signal.SIGTERM)
        deadline = self.clock.monotonic() + 10.0
        while self.clock.monotonic() < deadline:
            now = read_heartbeat(self.data_dir / WATCHDOG_HEARTBEAT)
            if now is None or now.phase == "stopped" or is_same_process(now) is not True:
                return
            await asyncio.sleep(0.1)
        log.error("the adopted watchdog (pid %s) did not stop within 10 s", hb.pid)

    def _event(
        self, kind: str, reason: str, severity: str = "warning", cycle_id: int | None = None
    ) -> None:
        self.store.post(log_safety_event, "main_loop", kind, reason, severity, cycle_id=cycle_id)

    def _on_protective_reject(self, order_ref: str, code: int, msg: str) -> None:
        self.protection.child_rejected(order_ref, code, msg)

    def _on_partial_fill(self, order_ref: str) -> None:
        if self.commander.keeper.protection is not None and not is_protective_ref(order_ref):
            self._cover_soon.set()

    async def _cover_between_cycles(self, next_at: float) -> None:
        """An entry of ours filled in part: after `partial_fill_grace_s` (if the next cycle is
        not due first), one cover keeper pass, bounded like a cycle. Between cycles, so it
        never runs beside a cycle's own orders."""
        loop = asyncio.get_running_loop()
        grace = self.cfg.commander.partial_fill_grace_s
        if loop.time() + grace >= next_at:
            return  # the next cycle's own pass comes first
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), grace)
        if self.stop.is_set():
            return
        try:
            await asyncio.wait_for(self.commander.cover_now(), self.cfg.loop.max_cycle_s)
        except (TimeoutError, ConnectionError, BrokerError, StorageUnavailable) as exc:
            log.warning("cover after a partial fill not done: %r (the next cycle does it)", exc)

    def _on_reject_streak(self, n: int, why: str) -> None:
        if n >= self.cfg.risk.max_consecutive_rejects:
            self.breaker.trip(
                BreakerState.HALTED, "broker", f"{n} consecutive order rejects (last: {why})"
            )

    def _on_execution(self, when: float) -> None:
        # counted before any write (the broker calls this before it queues the record)
        if self.gate_state.record_execution(when, self.cfg.risk):
            log.critical("repeated-execution throttle latched: a person must re-enable it")
            with contextlib.suppress(Exception):  # the latch holds even if this is not stored
                self.store.post(
                    log_safety_event,
                    "gate",
                    THROTTLE_LATCHED,
                    f"{self.cfg.risk.max_executions_per_window} executions in "
                    f"{self.cfg.risk.execution_window_s:g}s: new exposure refused until a "
                    "person runs `throttle reenable`",
                    "critical",
                )
            self.breaker.trip(
                BreakerState.REDUCING,
                "gate",
                f"repeated-execution throttle: {self.cfg.risk.max_executions_per_window}"
                f" executions in {self.cfg.risk.execution_window_s:g}s",
            )

    # --- lifecycle -------------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped; return the process exit code."""
        self._notifier = start_notifier(self.cfg)  # alerts ([notify]); None without URLs
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        self._tasks.append(loop.create_task(self._heartbeat_loop(), name="heartbeat"))
        if self.cfg.watchdog.spawn:
            self._spawn_watchdog()
            self._tasks.append(loop.create_task(self._supervise_watchdog(), name="watchdog-sup"))
        code = await self._connect()
        if code is not None:
            await self._shutdown()
            return code
        sd_notify("READY=1")
        if self.cfg.watchdog.spawn:
            await self._wait_for_watchdog()
        await self._warm_up()
        if self.stop.is_set():  # stopped while starting: no cycle, straight to the clean stop
            await self._shutdown()
            return 0
        self._set_phase("idle")
        log.info(
            "main loop running: cycle every %.1fs (max %.1fs), breaker %s",
            self.cfg.loop.cycle_interval_s,
            self.cfg.loop.max_cycle_s,
            self.breaker.status().state.value,
        )
        await self._schedule()
        await self._shutdown()
        return 0

    async def _schedule(self) -> None:
        """Run cycles every cycle_interval_s on the monotonic clock (the event loop's), one at a
        time; missed runs coalesce. A wall-clock step, back or forward, changes nothing."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self.stop.is_set():
            task = loop.create_task(self._run_cycle(), name="cycle")
            self._cycle_task = task
            await asyncio.wait({task})  # a stop cuts the cycle after its grace period
            self._cycle_task = None
            if task.cancelled() and not self.stop.is_set():
                raise asyncio.CancelledError  # cancelled from outside: stop the loop
            next_at += self.cfg.loop.cycle_interval_s
            now = loop.time()
            if next_at < now:  # the cycle overran: start the next one now, not a burst
                next_at = now
            while not self.stop.is_set() and (now := loop.time()) < next_at:
                waits = {
                    loop.create_task(self._cover_soon.wait()),
                    loop.create_task(self.stop.wait()),
                }
                try:
                    await asyncio.wait(
                        waits, timeout=next_at - now, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for w in waits:
                        w.cancel()
                if self._cover_soon.is_set() and not self.stop.is_set():
                    self._cover_soon.clear()
                    await self._cover_between_cycles(next_at)

    def _request_stop(self, sig: signal.Signals) -> None:
        if self.stop.is_set():
            return
        log.warning("received %s: stopping (no new orders from now on)", sig.name)
        sd_notify("STOPPING=1")
        self.cancel.set()  # in-flight LLM calls stop now; act() sends nothing more
        self.stop.set()
        asyncio.get_running_loop().call_later(self.cfg.loop.stop_timeout_s / 2, self._cut_cycle)

    def _cut_cycle(self) -> None:
        """The stop's grace period is over: cancel a cycle still running (it records itself
        as interrupted)."""
        task = self._cycle_task
        if task is not None and not task.done():
            log.warning(
                "cycle still running %.0fs after the stop: cutting it",
                self.cfg.loop.stop_timeout_s / 2,
            )
            task.cancel()

    async def _cancel_own_orders(self) -> None:
        """A clean stop leaves nothing of ours working at the broker ([loop]
        cancel_orders_on_stop); it waits a bounded time for the broker to confirm."""
        refs = self.broker.cancel_own_orders()
        if not refs:
            return
        deadline = self.clock.monotonic() + self.cfg.loop.stop_timeout_s / 4
        while self.clock.monotonic() < deadline and any(
            self.broker.order_status(r) not in DONE_BROKER_STATES for r in refs
        ):
            await asyncio.sleep(0.05)
        left = [r for r in refs if self.broker.order_status(r) not in DONE_BROKER_STATES]
        reason = f"stop: cancelled {len(refs)} working orders of ours ({', '.join(refs)})"
        if left:  # the broker never confirmed (a socket that just died): say so, loudly
            reason += f"; not confirmed by the broker: {_may_still_work(left)}"
            log.critical(reason)
        self._event("stop_cancel", reason, "critical" if left else "info")

    async def _report_uncancelled(self) -> None:
        """The stop cannot cancel anything: no broker session. Our orders may still be
        working at the broker; say so, loudly, with their refs (the next start reconciles)."""
        try:
            left = await self.store.run(
                open_intents, ("commander", "person"), timeout=self.cfg.data.write_timeout_s
            )
        except Exception as exc:  # the database is the only place that knows: say that too
            left, why = [], f" (open intents unreadable: {exc})"
        else:
            why = ""
        if not left and not why:
            return
        refs = [i["order_ref"] for i in left]
        reason = f"stop: the broker is not reachable{why}: " + (
            _may_still_work(refs)
            if refs
            else "any working order of ours may still be working at the broker"
        )
        log.critical(reason)
        self._event("stop_cancel", reason, "critical")

    async def _final_reconcile(self) -> None:
        """Before the session closes: store every fill the broker has booked for us and bring
        the intents to the broker's word (a fill racing the stop is recorded now, not at the
        next start)."""
        if not self.broker.ready:
            return
        try:
            report = await asyncio.wait_for(
                self.broker.reconcile(), self.cfg.loop.stop_timeout_s / 4
            )
        except (TimeoutError, ConnectionError, BrokerNotReady) as exc:
            self._event(
                "stop_reconcile",
                f"stop: final reconcile not finished ({type(exc).__name__}: {exc}); the next "
                "start reconciles",
                "warning",
            )
            return
        if report.executions_new:
            log.warning("stop: %d fills recorded by the final reconcile", report.executions_new)

    async def _connect(self) -> int | None:
        self._set_phase("connecting")
        delay = self.cfg.broker.reconnect_initial_s
        while not self.stop.is_set():
            try:
                await self.broker.start()
                return self._lock_account()
            except (ClientIdInUse, AccountModeError) as exc:
                print(f"fatal: {exc}", file=sys.stderr)
                self._event("startup", str(exc), "critical")
                return 2
            except (ConnectionError, OSError, TimeoutError) as exc:
                log.error(
                    "cannot reach the gateway at %s:%s (%s); retrying in %.1fs",
                    self.cfg.broker.host,
                    self.cfg.broker.port,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                delay = min(delay * 2, self.cfg.broker.reconnect_max_s)
        return 0

    def _lock_account(self) -> int | None:
        """One daemon per account: now that the gateway has said which account this is, hold
        its lock (a config that spelled it differently cannot get round it)."""
        b = self.cfg.broker
        path = account_lock_path(self.cfg.data.lock_dir, b.host, b.port, self.broker.account)
        try:
            self._account_lock = acquire(
                path, f"account {self.broker.account} at {b.host}:{b.port}"
            )
        except LockHeld as exc:
            if _held_by_me(path):
                return None  # the early lock (taken before anything was written) is this one
            print(f"fatal: {exc}", file=sys.stderr)
            self._event("startup", str(exc), "critical")
            return 2
        return None

    async def _wait_for_watchdog(self) -> None:
        """Give the child time to connect before the first cycle; stop waiting once it
        has reported for a heartbeat timeout that it cannot reach the broker (the cycles
        refuse new positions meanwhile)."""
        start = self.clock.monotonic()
        timeout = self.cfg.watchdog.heartbeat_timeout_s
        deadline = start + max(10.0, timeout)
        while (
            not self.watchdog_alive()
            and self.clock.monotonic() < deadline
            and not self.stop.is_set()
        ):
            hb = read_heartbeat(self.data_dir / WATCHDOG_HEARTBEAT)
            if (
                hb is not None
                and hb.session == "unreachable"
                and (self._child is None or hb.pid == self._child.pid)
                and self.clock.monotonic() - start >= timeout
            ):
                break
            await asyncio.sleep(0.05)
        if not self.watchdog_alive() and not self.stop.is_set():
            hb = read_heartbeat(self.data_dir / WATCHDOG_HEARTBEAT)
            session = hb.session if hb is not None and hb.session else "no heartbeat"
            self._event(
                "watchdog_absent",
                f"watchdog not alive at start (broker session: {session}; alive needs a fresh "
                "heartbeat and a broker session that polled the account): no new positions "
                "until it is",
                "critical",
            )

    async def _warm_up(self) -> None:
        """Sense once before the first cycle: qualify contracts, subscribe quotes, load chains
        and a year of IV. IB's pacing (about 45 requests a second) makes this take seconds;
        inside a cycle it would run into max_cycle_s."""
        self._set_phase("warm-up")
        t0 = self.clock.monotonic()
        timeout = max(60.0, self.cfg.loop.max_cycle_s)
        sensor, spec = self.commander.sensor, self.commander.spec
        try:
            done = await self._unless_stopped(
                sensor.context(spec, self.commander.wall_now()), timeout
            )
            if done:
                log.info("warm-up done in %.1fs", self.clock.monotonic() - t0)
            else:
                log.warning("warm-up cut by the stop after %.1fs", self.clock.monotonic() - t0)
        except Exception as exc:  # the cycles will retry what is missing
            why = f"timed out after {timeout:g}s" if isinstance(exc, TimeoutError) else repr(exc)
            log.warning(
                "warm-up incomplete (%s): %s; continuing, the cycles retry what is missing",
                why,
                sensor.shortfall(spec),
            )

    async def _unless_stopped(self, work: Coroutine[Any, Any, Any], timeout: float) -> bool:
        """Await `work` for at most `timeout` seconds unless a stop comes first: then cancel it
        (a stop never waits on a startup step: a supervisor kills a process that overstays
        its stop timeout, and the watchdog flattens a main loop that died). True: it finished;
        False: the stop cut it; TimeoutError: it overran."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait(
                {task, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopped.cancel()
        if task.done():
            task.result()  # its exception, if it failed
            return True
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        if self.stop.is_set():
            return False
        raise TimeoutError

    async def _run_cycle(self) -> None:
        if self.stop.is_set():
            return
        self.cancel.clear()  # a trip or stop cancels the calls of the cycle it happens in
        self._last_cycle_id += 1  # allocated here, so a locked database never stalls cycles
        cycle_id = self._last_cycle_id
        self.store.post(insert_cycle, cycle_id, os.getpid())
        self.cycle = cycle_id
        try:
            await asyncio.wait_for(self.commander.run_cycle(cycle_id), self.cfg.loop.max_cycle_s)
        except TimeoutError:
            pacing = self.broker.history_pacing()  # what it was waiting for, if pacing
            during = f" while {pacing}" if pacing else ""
            log.error(
                "cycle %s exceeded max_cycle_s=%.1f and was cancelled%s",
                cycle_id,
                self.cfg.loop.max_cycle_s,
                during,
            )
            self._event(
                "cycle_timeout",
                f"cycle exceeded {self.cfg.loop.max_cycle_s:g}s and was cancelled{during}",
                "warning",
                cycle_id,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one bad cycle never stops the loop
            log.exception("cycle %s failed", cycle_id)
            self._event("cycle_error", f"{type(exc).__name__}: {exc}", "warning", cycle_id)
        finally:
            self._set_phase("idle")
            self.cycles_run += 1
            if self.max_cycles is not None and self.cycles_run >= self.max_cycles:
                self.stop.set()

    async def _shutdown(self) -> None:
        self._set_phase("stopping")
        self.cancel.set()
        task = self._cycle_task
        if task is not None and not task.done():
            # the Act step sends synchronously, so an order in flight is never half-sent;
            # give the cycle the stop timeout to record, then cancel it
            await asyncio.wait({task}, timeout=self.cfg.loop.stop_timeout_s / 2)
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=5)
        # a close of an unprotected position finishes first
        await self.protection.wait_idle(self.cfg.loop.stop_timeout_s / 4)
        if self.cfg.loop.cancel_orders_on_stop and self.broker.ready:
            await self._cancel_own_orders()
        elif self.cfg.loop.cancel_orders_on_stop:
            await self._report_uncancelled()
        await self._final_reconcile()
        await self.broker.close()
        with contextlib.suppress(Exception):
            await self.provider.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._child is not None and self._child.poll() is None:
            self._child.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self._child.wait), 10)
            except TimeoutError:
                self._child.kill()
        elif self._child is None and self._adopted:
            await self._stop_adopted_watchdog()
        if self._notifier is not None:
            await asyncio.to_thread(self._notifier.stop)
        left = await asyncio.to_thread(self.store.close, self.cfg.loop.stop_timeout_s / 4)
        if left:
            log.critical("%d records could not be written before exit", left)
        self._set_phase("stopped")
        self._beat()
        log.info("main loop stopped after %d cycles", self.cycles_run)


def _may_still_work(refs: list[str]) -> str:
    """How a stop names our orders it could not get cancelled (one wording, both paths)."""
    shown = ", ".join(refs[:10]) + (f" +{len(refs) - 10}" if len(refs) > 10 else "")
    return (
        f"{len(refs)} orders of ours ({shown}) could not be cancelled and may still be working "
        "at the broker; the next start reconciles them"
    )


def _held_by_me(path: Path) -> bool:
    """True when the lock file names this process (its early lock, taken by the CLI)."""
    try:
        return path.read_text(encoding="utf-8").strip() == str(os.getpid())
    except OSError:
        return False
