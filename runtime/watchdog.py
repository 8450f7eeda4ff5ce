"""The independent watchdog: its own process, its own IB session (client 999), its own heartbeat.

It polls the main loop's heartbeat (monotonic age), the main PID (gone, zombie, stopped, or
reused by another process: pid and start time are both checked), cycle progress, and the
account through a fresh positions round trip every poll (daily loss, gross exposure, open
positions, each `limit_margin_pct` above the gate's limit). Its own heartbeat says whether it
holds a broker session and when it last polled the account; the main loop opens no new
positions unless both are fresh.

On a trip: breaker HALTED (persisted with the reason; a trip that cannot be written is latched
in memory, reported CRITICAL, and written as soon as it can be) -> kill a frozen main loop it
verified as the main loop -> reqGlobalCancel -> close every position (marketable limits inside
a collar, then market orders after a bounded wait; each close bounded by a timeout, one that
fails never holds up the others) -> confirm flat from a fresh positions answer, retrying with
escalating safety events. It keeps running afterwards and never resets the breaker. While the
breaker is HALTED (by anyone) it re-verifies flat from the broker on every poll and closes
whatever appears (a late fill, a manual trade). After a person's reset, a main heartbeat
written before the reset is not judged until a fresh one arrives or the timeout has run from
the reset (a loop that died before the reset is simply absent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
from collections.abc import Callable
from typing import Any

import psutil

from data_lake import Store, log_safety_event
from skills.execution_gate import (
    FLATTENERS,
    GateState,
    OrderRequest,
    is_flattener_ref,
    place_order_with_guard,
)

from .breaker import BreakerState, BreakerStatus, CircuitBreaker
from .broker import Broker, BrokerNotReady, PositionView
from .config import Config, Secrets
from .gate_context import build_gate_context
from .heartbeat import (
    MAIN_HEARTBEAT,
    WATCHDOG_HEARTBEAT,
    Clock,
    Heartbeat,
    SystemClock,
    is_same_process,
    read_heartbeat,
    start_matches,
    write_heartbeat,
)
from .notify import start_notifier

__all__ = ["Watchdog", "open_watchdog_store", "run_panic"]

log = logging.getLogger("runtime.watchdog")
WATCHDOG_BUSY_TIMEOUT_MS = 200
CONNECT_RETRY_MAX_S = 2.0  # the safety net retries its session often
EVENT_REPEAT_S = 10.0  # the same repeated event is recorded at most this often
ACCOUNT_SNAPSHOT_S = 30.0  # the watchdog records the account this often (status, charts)


def open_watchdog_store(cfg: Config) -> Store:
    """The watchdog's store: it watches at once; records queue until the database opens."""
    return Store.open(
        cfg.data_dir,
        busy_timeout_ms=min(WATCHDOG_BUSY_TIMEOUT_MS, cfg.data.busy_timeout_ms),
        open_timeout_s=None,
        name="watchdog",
    )


class Watchdog:
    """The independent watchdog, complete once built: its store, breaker and broker session
    (its own client id; not yet connected). `run()` watches; `panic()` is the kill switch."""

    def __init__(
        self,
        cfg: Config,
        secrets: Secrets,
        *,
        store: Store,
        broker: Broker,
        clock: Clock | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.secrets = secrets
        self.clock = clock or SystemClock()
        self.data_dir = cfg.data_dir
        self.store = store
        self.broker = broker
        self.source = broker.source  # who its safety events name: "watchdog" or "panic"
        self.breaker = CircuitBreaker(self.data_dir, store)
        self.started = self.clock.monotonic()
        self.stop = asyncio.Event()
        self.phase = "starting"
        self.main_seen = False
        self.warned_absent = False
        self._progress: tuple[int, float] | None = None
        self._gate = GateState()
        self._flat_generation = -1
        self.trips = 0
        self.polls = 0
        self.account_poll_mono: float | None = None  # last fresh positions answer
        self._connect_failures = 0
        self._seen_generation: int | None = None
        self._reset_mono: float | None = None  # when a person's reset was first seen
        self._unpersisted: int | None = None  # generation of a trip not yet in breaker.json
        self._failed_flattens = 0
        self._close_seq = 0
        self._last_event: dict[tuple[str, str], float] = {}
        self._last_snapshot = -math.inf
        self._data_cycle_at = -math.inf  # when the session's per-cycle refusals last ended
        self._data_cycles = 0
        self._judged: Heartbeat | None = None  # the main heartbeat check_main last judged
        self.progress: Callable[[str], None] = progress or (lambda line: None)  # panic's steps

    @classmethod
    def create(
        cls,
        cfg: Config,
        secrets: Secrets,
        store: Store,
        *,
        client_id: int | None = None,
        source: str = "watchdog",
        clock: Clock | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Watchdog:
        """A watchdog on `store` with its own broker session (the watchdog's client id unless
        `client_id` is given: panic uses one of its own). `source` ("watchdog" or "panic")
        names its safety events and its closing orders' intents."""
        if source not in FLATTENERS:
            raise ValueError(f"a watchdog's source is one of {sorted(FLATTENERS)}: {source!r}")
        clock = clock or SystemClock()
        broker = Broker(
            cfg.broker,
            cfg.mode,
            secrets,
            store,
            client_id=cfg.broker.watchdog_client_id if client_id is None else client_id,
            source=source,
            # both: the panic command exits, its closes' late fills are the watchdog's to record
            intent_sources=tuple(sorted(FLATTENERS)),
            monotonic=clock.monotonic,
        )
        return cls(cfg, secrets, store=store, broker=broker, clock=clock, progress=progress)

    # --- plumbing --------------------------------------------------------------------------
    def _event(
        self,
        kind: str,
        reason: str,
        severity: str = "critical",
        details: dict[str, Any] | None = None,
    ) -> None:
        log.log(
            logging.CRITICAL if severity == "critical" else logging.WARNING, "%s: %s", kind, reason
        )
        # queued: a busy or full database delays the record, never the watchdog
        # recorded as its session's source: "watchdog", or "panic" for the panic command
        self.store.post(log_safety_event, self.source, kind, reason, severity, details=details)

    def _event_repeated(self, kind: str, reason: str, severity: str = "critical") -> None:
        """An event that may repeat every poll: logged each time, recorded at most every
        EVENT_REPEAT_S seconds for the same reason."""
        now = self.clock.monotonic()
        last = self._last_event.get((kind, reason))
        if last is not None and now - last < EVENT_REPEAT_S:
            log.log(logging.WARNING, "%s (repeated): %s", kind, reason)
            return
        self._last_event[(kind, reason)] = now
        self._event(kind, reason, severity)

    def session_state(self) -> str:
        """connected: a broker session that answered an account poll within the heartbeat
        timeout; connecting: no answer yet and no failure; unreachable: anything else."""
        now = self.clock.monotonic()
        polled = self.account_poll_mono
        fresh = polled is not None and now - polled <= self.cfg.watchdog.heartbeat_timeout_s
        if self.broker.ready and fresh:
            return "connected"
        if polled is None and self._connect_failures == 0:
            return "connecting"
        return "unreachable"

    def _beat(self, phase: str) -> None:
        write_heartbeat(
            self.data_dir / WATCHDOG_HEARTBEAT,
            self.clock,
            self.polls,
            phase,
            session=self.session_state(),
            account_poll_mono=self.account_poll_mono,
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                self._beat(self.phase)
            except OSError as exc:
                log.error("watchdog heartbeat not written: %s", exc)
            await asyncio.sleep(min(0.5, self.cfg.watchdog.poll_interval_s))

    async def _connect(self) -> None:
        delay = 0.5
        while not self.stop.is_set():
            try:
                await self.broker.start()
                return
            except Exception as exc:
                self._connect_failures += 1
                self._event_repeated(
                    "watchdog_unreachable",
                    f"watchdog cannot reach the gateway at {self.cfg.broker.host}:"
                    f"{self.cfg.broker.port} as client {self.cfg.broker.watchdog_client_id}"
                    f": {exc}; retrying",
                    "critical",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                delay = min(delay * 2, CONNECT_RETRY_MAX_S)

    # --- checks ------------------------------------------------------------------------------
    def _process_reasons(self, hb: Heartbeat) -> tuple[list[str], bool]:
        """(reasons, gone) for the process that wrote the main heartbeat."""
        same = is_same_process(hb)
        if same is False:
            if psutil.pid_exists(hb.pid):
                return [
                    f"main loop process {hb.pid} is gone (its pid now belongs to another "
                    "process with a different start time)"
                ], True
            return [f"main loop process {hb.pid} is gone"], True
        try:
            status = psutil.Process(hb.pid).status()
        except psutil.NoSuchProcess:
            return [f"main loop process {hb.pid} is gone"], True
        except psutil.Error as exc:
            log.warning("cannot inspect main pid %s: %s", hb.pid, exc)
            return [], False
        if status == psutil.STATUS_ZOMBIE:
            return [f"main loop process {hb.pid} is a zombie"], True
        if status == psutil.STATUS_STOPPED:
            return [f"main loop process {hb.pid} is stopped (SIGSTOP)"], False
        return [], False

    def check_main(self) -> list[str]:
        """Reasons the main loop counts as dead or frozen (empty: healthy or cleanly stopped)."""
        w = self.cfg.watchdog
        hb = read_heartbeat(self.data_dir / MAIN_HEARTBEAT)
        self._judged = hb  # the heartbeat these reasons are about (the kill acts on this one)
        now = self.clock.monotonic()
        if hb is None:
            if self.main_seen:
                return ["main heartbeat missing or unreadable"]
            if not self.warned_absent and now - self.started > w.heartbeat_timeout_s:
                self.warned_absent = True
                self._event("main_absent", "no main loop heartbeat yet", "warning")
            return []
        if hb.phase == "stopped":
            self.main_seen = False  # a clean stop is not a fault
            self._progress = None
            return []
        age = hb.age(now)
        reset = self._reset_mono
        if reset is not None and hb.mono_ts <= reset:
            # A person reset the breaker after this heartbeat was written: it is not judged
            # until a fresh one arrives or the timeout has run from the reset. A loop that
            # died before the reset is simply absent (nothing to watch until a new one beats).
            if self._process_reasons(hb)[1]:
                self.main_seen = False
                self._progress = None
                return []
            if now - reset <= w.heartbeat_timeout_s:
                return []
            age = now - reset
        self.main_seen = True
        reasons = []
        if age > w.heartbeat_timeout_s:
            reasons.append(
                f"main heartbeat stale: {age:.1f}s old (limit {w.heartbeat_timeout_s:g}s)"
            )
        reasons += self._process_reasons(hb)[0]
        if hb.phase not in ("starting", "connecting", "warm-up"):
            if self._progress is None or self._progress[0] != hb.cycle:
                self._progress = (hb.cycle, now)
            else:
                limit = (
                    self.cfg.loop.cycle_interval_s
                    + self.cfg.loop.max_cycle_s
                    + w.heartbeat_timeout_s
                )
                stuck = now - max(self._progress[1], reset or self._progress[1])
                if stuck > limit:
                    reasons.append(f"no cycle progress for {stuck:.0f}s (limit {limit:.0f}s)")
        return reasons

    def account_limits(self) -> tuple[float, float, int]:
        """The watchdog's own (daily loss, gross exposure, open positions) limits: the gate's
        plus `limit_margin_pct`, so a book at the gate's limit is not liquidated by a small
        move (open positions: at least one more than the gate allows)."""
        r = self.cfg.risk
        m = self.cfg.watchdog.limit_margin_pct
        n = r.max_open_positions
        if m > 0:
            n = max(n + 1, math.floor(n * (1 + m)))
        return r.max_daily_loss * (1 + m), r.max_gross_exposure * (1 + m), n

    def check_account(self, positions: list[PositionView] | None) -> list[str]:
        """Account limit breaches, judged on a fresh positions answer (None: no answer)."""
        if positions is None or not self.broker.ready:
            return []
        max_loss, max_gross, max_n = self.account_limits()
        values = self.broker.account_values()
        reasons = []
        daily = values.get("DailyPnL")
        if daily is not None and daily <= -max_loss:
            reasons.append(
                f"daily loss {daily:,.0f} breaches -{max_loss:,.0f} (the watchdog's limit: "
                f"the gate's {self.cfg.risk.max_daily_loss:,.0f} + margin)"
            )
        gross = values.get("GrossPositionValue")
        if gross is not None and gross > max_gross:
            reasons.append(
                f"gross exposure {gross:,.0f} above {max_gross:,.0f} (the watchdog's limit: "
                f"the gate's {self.cfg.risk.max_gross_exposure:,.0f} + margin)"
            )
        if len(positions) > max_n:
            reasons.append(f"{len(positions)} open positions above the watchdog's limit {max_n}")
        return reasons

    async def _poll_account(self) -> list[PositionView] | None:
        """A fresh positions round trip to the broker (never the cached view); None when it
        cannot be had (no session, gateway silent). A success is the account poll that the
        watchdog's heartbeat reports."""
        if not self.broker.ready:
            return None
        try:
            positions = await self.broker.fresh_positions(self.cfg.broker.request_timeout_s)
        except (BrokerNotReady, TimeoutError, ConnectionError, OSError) as exc:
            why = (
                f"no answer within {self.cfg.broker.request_timeout_s:g}s"
                if isinstance(exc, TimeoutError)
                else str(exc) or type(exc).__name__
            )
            log.warning("account poll failed: %s", why)
            return None
        self.account_poll_mono = self.clock.monotonic()
        if self.account_poll_mono - self._last_snapshot >= ACCOUNT_SNAPSHOT_S:
            self._last_snapshot = self.account_poll_mono
            self.broker.snapshot_account("poll")  # status's figures while cycles are skipped
        return positions

    # --- actions -----------------------------------------------------------------------------
    async def trip(self, reasons: list[str]) -> None:
        reason = "; ".join(reasons)
        status = self.breaker.trip(BreakerState.HALTED, "watchdog", reason, actor="watchdog")
        self.trips += 1
        self._event(
            "breaker_trip",
            reason,
            "critical",
            {"generation": status.generation, "persisted": status.persisted},
        )
        if not status.persisted:
            self._unpersisted = status.generation
            self._event(
                "breaker_not_persisted",
                f"breaker trip NOT written to {self.breaker.path}: latched in memory; "
                "cancelling and flattening anyway; the write is retried every poll",
                "critical",
            )
        # a frozen loop is killed first: it must not wake up to trade, and no close that
        # hangs or fails may delay it
        self._kill_frozen_main(reasons)
        try:
            self.broker.global_cancel()
        except Exception as exc:
            self._event("global_cancel_failed", str(exc), "critical")
        self._seen_generation = status.generation
        await self.flatten(status.generation)

    def _kill_frozen_main(self, reasons: list[str]) -> None:
        if not self.cfg.watchdog.kill_frozen_main:
            return
        if not any("stale" in r or "stopped" in r or "progress" in r for r in reasons):
            return
        # the process judged frozen, not whatever the heartbeat names now: a daemon restarted
        # in the meantime writes its own heartbeat and must not be killed for its predecessor
        hb = self._judged
        if hb is None or hb.phase == "stopped":
            return
        now = read_heartbeat(self.data_dir / MAIN_HEARTBEAT)
        if now is not None and (now.pid, now.create_time) != (hb.pid, hb.create_time):
            self._event_repeated(
                "main_kill_skipped",
                f"not killing: the main loop judged frozen (pid {hb.pid}) was replaced by pid "
                f"{now.pid}, which has not been judged",
            )
            return
        try:
            proc = psutil.Process(hb.pid)
            # pid AND start time: a pid reused by another process is never killed (psutil's
            # kill() re-checks the start time it read here, so the check cannot go stale)
            if not start_matches(hb, proc.create_time(), psutil.boot_time()):
                self._event_repeated(
                    "main_kill_skipped",
                    f"not killing pid {hb.pid}: it is not the main loop that wrote the heartbeat"
                    " (start time differs or was not recorded)",
                )
                return
            proc.kill()  # SIGKILL: the only signal a SIGSTOPped process cannot ignore
            self._event("main_killed", f"frozen main loop {hb.pid} killed", "critical")
        except psutil.NoSuchProcess:
            pass
        except psutil.Error as exc:
            self._event_repeated("main_kill_failed", f"could not kill main loop {hb.pid}: {exc}")

    def _close_request(
        self, p: PositionView, attempt: int, generation: int, limit: float | None
    ) -> OrderRequest:
        action = "SELL" if p.quantity > 0 else "BUY"
        return OrderRequest(
            contract=p.contract,
            action=action,
            quantity=abs(p.quantity),
            order_type="LMT" if limit is not None else "MKT",
            limit_price=limit,
            tif="DAY",
            source=self.source,  # "panic" for the panic command's closes (`orders`, `why`)
            # unique per close: a late fill closed under the same generation gets a new ref
            ref_seed=f"g{generation}-a{attempt}-p{os.getpid()}-n{self._close_seq}",
        )

    async def _prepare_close(
        self, p: PositionView, attempt: int, generation: int
    ) -> tuple[OrderRequest, Any]:
        w = self.cfg.watchdog
        limit = None
        if attempt < w.max_close_attempts and attempt <= 2:
            contract = await self.broker.qualify(p.contract)
            q = await self.broker.quote(contract, max_wait_s=0.5) if contract else None
            # only a live, trusted quote prices a close; otherwise straight to market
            if (
                q is not None
                and q.bid > 0
                and q.ask > 0
                and q.market_data_type == 1
                and not (q.suspect)
            ):
                raw = (
                    q.bid * (1 - w.close_collar_pct)
                    if p.quantity > 0
                    else q.ask * (1 + w.close_collar_pct)
                )
                limit = max(0.01, round(raw, 2))
        self._close_seq += 1
        request = self._close_request(p, attempt, generation, limit)
        ctx = await build_gate_context(
            self.broker,
            request,
            breaker="HALTED",
            watchdog_alive=True,
            market_open=True,
            now=self.clock.monotonic(),
            quote_wait_s=0.5,
        )
        return request, ctx

    async def _close(self, p: PositionView, attempt: int, generation: int) -> bool:
        # Everything before the gate (qualify, quote, context) is bounded; the gate itself is
        # bounded by the intent write timeout and sends synchronously (never half-sent).
        bound = self.cfg.broker.request_timeout_s + 2.0
        try:
            request, ctx = await asyncio.wait_for(
                self._prepare_close(p, attempt, generation), bound
            )
        except TimeoutError:
            self._event_repeated(
                "close_failed", f"closing {p.key}: no contract or quote within {bound:g}s"
            )
            return False
        verdict = await place_order_with_guard(
            request,
            ctx,
            self._gate,
            self.cfg.risk,
            self.store,
            self.broker,
            intent_timeout_s=self.cfg.data.write_timeout_s,
        )
        if not verdict.accepted:
            self._event_repeated("close_refused", f"closing {p.key}: {'; '.join(verdict.reasons)}")
        return verdict.accepted

    def _confirm_flat(self, generation: int, how: str) -> bool:
        self._failed_flattens = 0
        if self._flat_generation != generation:
            self._flat_generation = generation
            self._event("flat_confirmed", f"account flat ({how}, verified from the broker)", "info")
        return True

    def _not_flat(self) -> bool:
        self._failed_flattens += 1
        if self._failed_flattens == self.cfg.watchdog.max_close_attempts:
            self._event(
                "flatten_failed",
                f"not flat after {self._failed_flattens} attempts: a person must act "
                "(python -m runtime panic / the broker's own tools)",
            )
        return False

    async def flatten(self, generation: int, positions: list[PositionView] | None = None) -> bool:
        """Close every position and confirm flat from a fresh broker answer; True when flat.
        One contract that cannot be closed never holds up the others."""
        w = self.cfg.watchdog
        for attempt in range(1, w.max_close_attempts + 1):
            if positions is None:
                positions = await self._poll_account()
            if positions is None:  # no session or no answer: an empty list proves nothing
                self._event_repeated(
                    "flatten_blocked",
                    "gateway unreachable or silent: cannot close positions or confirm flat yet",
                )
                return self._not_flat()
            if not positions:
                return self._confirm_flat(generation, f"attempt {attempt}")
            results = await asyncio.gather(
                *(self._close(p, attempt, generation) for p in positions), return_exceptions=True
            )
            sent = set()
            for p, result in zip(positions, results, strict=True):
                self.progress(
                    f"attempt {attempt}: close {p.quantity:g} {p.key}: "
                    + ("sent" if result is True else "NOT sent (see safety events)")
                )
                if result is True:
                    sent.add(p.key)
                elif isinstance(result, BaseException):
                    self._event_repeated(
                        "close_failed", f"closing {p.key}: {type(result).__name__}: {result}"
                    )
            if not sent:
                left = ", ".join(p.key for p in positions)
                self._event_repeated(
                    "flatten_blocked",
                    f"no closing order could be sent ({left}); retrying at the next poll",
                )
                return self._not_flat()
            deadline = self.clock.monotonic() + w.close_wait_s
            while self.clock.monotonic() < deadline and any(
                p.key in sent for p in self.broker.positions()
            ):
                await asyncio.sleep(0.02)
            positions = await self._poll_account()
            if positions is None:
                continue  # reported at the top of the next attempt
            if not positions:
                return self._confirm_flat(generation, f"attempt {attempt}")
            left = ", ".join(f"{p.key} {p.quantity:g}" for p in positions)
            self.progress(f"attempt {attempt}: still open: {left}")
            if not any(p.key in sent for p in positions):
                self._event_repeated(
                    "flatten_blocked",
                    f"still open, no closing order could be sent: {left}; retrying at the "
                    "next poll",
                )
                return self._not_flat()
            severity = "warning" if attempt < w.max_close_attempts - 1 else "critical"
            self._event("flatten_retry", f"attempt {attempt}: still open: {left}", severity)
            with contextlib.suppress(Exception):
                self.broker.global_cancel()
        if positions == []:
            return self._confirm_flat(generation, "after retries")
        self._failed_flattens = w.max_close_attempts - 1
        return self._not_flat()

    def _note_breaker(self, status: BreakerStatus) -> None:
        """Follow the breaker: a person's reset opens a grace period for old heartbeats; a
        trip that could not be written is reported once it has been."""
        if self._unpersisted is not None and status.persisted:
            self._event(
                "breaker_persisted",
                f"the watchdog's trip is now written to {self.breaker.path}",
                "warning",
            )
            self._unpersisted = None
        if self._seen_generation is None:
            self._seen_generation = status.generation
            return
        if status.generation == self._seen_generation:
            return
        self._seen_generation = status.generation
        if status.state is BreakerState.ACTIVE and status.source == "person":
            self._reset_mono = self.clock.monotonic()
            self._progress = None
            self._flat_generation = -1
            self._failed_flattens = 0
            log.warning(
                "breaker reset by %s: main heartbeats older than the reset are not judged "
                "for %.1fs",
                status.actor or "a person",
                self.cfg.watchdog.heartbeat_timeout_s,
            )

    async def _hold_flat(self, status: BreakerStatus, positions: list[PositionView] | None) -> None:
        """HALTED means flat and staying flat: verified from the broker on every poll, and no
        order left working (a global cancel lost in a gateway freeze is sent again)."""
        await self._cancel_stray_orders()
        if positions is None:
            self._event_repeated(
                "flat_unverified",
                "breaker HALTED but the broker's positions cannot be read now: flat not verified",
                "warning",
            )
            return
        if not positions:
            self._confirm_flat(status.generation, "HALTED")
            return
        left = ", ".join(f"{p.key} {p.quantity:g}" for p in positions)
        self._event_repeated(
            "halted_not_flat",
            f"breaker HALTED but the broker shows open positions: {left}; closing",
        )
        self._flat_generation = -1
        await self.flatten(status.generation, positions)

    async def _cancel_stray_orders(self) -> None:
        """While HALTED, any working order other than our own closes is cancelled at once
        (reqGlobalCancel; a close it catches is sent again by the next flatten attempt)."""
        if not self.broker.ready:
            return
        try:
            working = await asyncio.wait_for(
                self.broker.working_orders(), self.cfg.broker.request_timeout_s
            )
        except (TimeoutError, ConnectionError, BrokerNotReady) as exc:
            self._event_repeated(
                "orders_unverified", f"working orders not read: {exc!r}", "warning"
            )
            return
        # the watchdog's and the panic command's closes are ours; anything else is stray
        stray = sorted(w.order_ref or w.key for w in working if not is_flattener_ref(w.order_ref))
        if not stray:
            return
        self._event_repeated(
            "halted_orders_working",
            f"breaker HALTED but orders are still working at the broker: {', '.join(stray[:5])}"
            + (f" (+{len(stray) - 5})" if len(stray) > 5 else "")
            + "; global cancel sent again",
        )
        try:
            self.broker.global_cancel()
        except BrokerNotReady as exc:
            self._event_repeated("global_cancel_failed", str(exc))

    def _begin_data_cycle(self) -> None:
        """The watchdog's session follows the same error policy as the main loop's (one
        Broker class, one table): 1100 makes it not ready (no account verification, its
        heartbeat stops saying connected); contracts refused market data (354 ...) are tried
        again once per main-loop cycle interval, as the main loop does every cycle."""
        now = self.clock.monotonic()
        if now - self._data_cycle_at >= self.cfg.loop.cycle_interval_s:
            self._data_cycle_at = now
            self._data_cycles += 1
            self.broker.begin_cycle(self._data_cycles)

    async def poll_once(self) -> None:
        self.polls += 1
        self._begin_data_cycle()
        status = self.breaker.status()  # also retries writing a trip that was not persisted
        self._note_breaker(status)
        positions = await self._poll_account()
        reasons = self.check_main() + self.check_account(positions)
        if self.broker.ready:
            with contextlib.suppress(Exception):  # keep closing quotes streaming
                await asyncio.wait_for(self.broker.holdings(quote_wait_s=0.2), 2.0)
        if reasons and status.state is not BreakerState.HALTED:
            await self.trip(reasons)
        elif status.state is BreakerState.HALTED:
            if reasons:
                self._kill_frozen_main(reasons)
            await self._hold_flat(status, positions)

    async def panic(self, by: str, reason: str) -> bool:
        """The kill switch, usable without the daemon: trip HALTED, cancel all, go flat.
        Closes the broker session and the store when done."""
        status = self.breaker.trip(
            BreakerState.HALTED, "person", f"panic by {by}: {reason}", actor=by
        )
        self._event("panic", f"panic by {by}: {reason}", "critical", {"by": by, "reason": reason})
        try:
            try:
                await self.broker.connect()
                self.broker.global_cancel()
            except Exception as exc:  # recorded: `why` must not take the panic for a cancel
                self._event(
                    "global_cancel_failed",
                    f"panic: global cancel not sent ({str(exc) or type(exc).__name__})",
                )
                raise
            await self.broker.holdings(quote_wait_s=1.0)
            return await self.flatten(status.generation)
        finally:
            await self.broker.close()
            await asyncio.to_thread(self.store.close, 5.0)

    # --- run -----------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        hb_task = loop.create_task(self._heartbeat_loop(), name="watchdog-heartbeat")
        notifier = start_notifier(self.cfg)  # alerts ([notify]); None without URLs
        self.started = self.clock.monotonic()
        self.phase = "connecting"
        await self._connect()
        self.phase = "watching"
        log.info(
            "watchdog watching (client %s, timeout %.1fs, poll %.1fs)",
            self.cfg.broker.watchdog_client_id,
            self.cfg.watchdog.heartbeat_timeout_s,
            self.cfg.watchdog.poll_interval_s,
        )
        while not self.stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # the watchdog must not die of one bad poll
                log.exception("watchdog poll failed")
                self._event("watchdog_error", f"{type(exc).__name__}: {exc}", "warning")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.cfg.watchdog.poll_interval_s)
        self.phase = "stopped"
        hb_task.cancel()
        await asyncio.wait({hb_task}, timeout=5)  # never raises; our own cancel still does
        with contextlib.suppress(OSError):
            self._beat("stopped")
        await self.broker.close()
        if notifier is not None:
            await asyncio.to_thread(notifier.stop)
        await asyncio.to_thread(self.store.close, 5.0)
        return 0


async def run_panic(
    cfg: Config,
    secrets: Secrets,
    by: str,
    reason: str,
    client_id: int,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """`panic`: open the store, build a watchdog on `client_id`, trip, cancel all, go flat."""
    store = await asyncio.to_thread(
        Store.open, cfg.data_dir, busy_timeout_ms=cfg.data.busy_timeout_ms, name="panic"
    )
    watchdog = Watchdog.create(
        cfg, secrets, store, client_id=client_id, source="panic", progress=progress
    )
    return await watchdog.panic(by, reason)
