"""The independent watchdog: its own process, its own IB session (client 999), its own heartbeat.

It polls the main loop's heartbeat (monotonic age), the main PID (gone, zombie, stopped),
cycle progress, and the account (daily loss, gross exposure, open positions). On a trip:
breaker HALTED (persisted, with the reason) -> reqGlobalCancel -> close every position
(marketable limits inside a collar, then market orders after a bounded wait) -> confirm flat
from the broker's positions, retrying with escalating safety events -> optionally kill a
frozen main loop. It keeps running afterwards and never resets the breaker. Whenever the
breaker is HALTED (by anyone) and the account is not flat, it flattens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import psutil

from data_lake import Store, log_safety_event
from skills.execution_gate import GateState, OrderRequest, place_order_with_guard

from .breaker import BreakerState, CircuitBreaker
from .broker import Broker, PositionView
from .config import Config, Secrets
from .gate_context import build_gate_context
from .heartbeat import Clock, SystemClock, read_heartbeat, write_heartbeat
from .main_loop import MAIN_HEARTBEAT, WATCHDOG_HEARTBEAT

__all__ = ["Watchdog"]

log = logging.getLogger("runtime.watchdog")
WATCHDOG_BUSY_TIMEOUT_MS = 200


class Watchdog:
    def __init__(self, cfg: Config, secrets: Secrets, *, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.secrets = secrets
        self.clock = clock or SystemClock()
        self.data_dir = cfg.data_dir
        self.stop = asyncio.Event()
        self.phase = "starting"
        self.main_seen = False
        self.warned_absent = False
        self._progress: tuple[int, float] | None = None
        self._gate = GateState()
        self._flat_generation = -1
        self.trips = 0
        self.polls = 0

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
        self.store.post(log_safety_event, "watchdog", kind, reason, severity, details=details)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                write_heartbeat(
                    self.data_dir / WATCHDOG_HEARTBEAT, self.clock, self.polls, self.phase
                )
            except OSError as exc:
                log.error("watchdog heartbeat not written: %s", exc)
            await asyncio.sleep(min(1.0, self.cfg.watchdog.poll_interval_s))

    async def _connect(self) -> None:
        delay = 0.5
        while not self.stop.is_set():
            try:
                await self.broker.start()
                return
            except Exception as exc:
                self._event(
                    "watchdog_unreachable",
                    f"watchdog cannot reach the gateway at {self.cfg.broker.host}:"
                    f"{self.cfg.broker.port} as client {self.cfg.broker.watchdog_client_id}"
                    f": {exc}; retrying",
                    "critical",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                delay = min(delay * 2, 10.0)

    # --- checks ------------------------------------------------------------------------------
    def check_main(self) -> list[str]:
        """Reasons the main loop counts as dead or frozen (empty: healthy or cleanly stopped)."""
        w = self.cfg.watchdog
        hb = read_heartbeat(self.data_dir / MAIN_HEARTBEAT)
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
        self.main_seen = True
        reasons = []
        age = hb.age(now)
        if age > w.heartbeat_timeout_s:
            reasons.append(
                f"main heartbeat stale: {age:.1f}s old (limit {w.heartbeat_timeout_s:g}s)"
            )
        try:
            status = psutil.Process(hb.pid).status()
            if status == psutil.STATUS_ZOMBIE:
                reasons.append(f"main loop process {hb.pid} is a zombie")
            elif status == psutil.STATUS_STOPPED:
                reasons.append(f"main loop process {hb.pid} is stopped (SIGSTOP)")
        except psutil.NoSuchProcess:
            reasons.append(f"main loop process {hb.pid} is gone")
        except psutil.Error as exc:
            log.warning("cannot inspect main pid %s: %s", hb.pid, exc)
        if hb.phase not in ("starting", "connecting", "warm-up"):
            if self._progress is None or self._progress[0] != hb.cycle:
                self._progress = (hb.cycle, now)
            else:
                limit = (
                    self.cfg.loop.cycle_interval_s
                    + self.cfg.loop.max_cycle_s
                    + w.heartbeat_timeout_s
                )
                stuck = now - self._progress[1]
                if stuck > limit:
                    reasons.append(f"no cycle progress for {stuck:.0f}s (limit {limit:.0f}s)")
        return reasons

    def check_account(self) -> list[str]:
        if not self.broker.ready:
            return []
        r = self.cfg.risk
        values = self.broker.account_values()
        reasons = []
        daily = values.get("DailyPnL")
        if daily is not None and daily <= -r.max_daily_loss:
            reasons.append(f"daily loss {daily:,.0f} breaches -{r.max_daily_loss:,.0f}")
        gross = values.get("GrossPositionValue")
        if gross is not None and gross > r.max_gross_exposure:
            reasons.append(f"gross exposure {gross:,.0f} above {r.max_gross_exposure:,.0f}")
        n = len(self.broker.positions())
        if n > r.max_open_positions:
            reasons.append(f"{n} open positions above the limit {r.max_open_positions}")
        return reasons

    # --- actions -----------------------------------------------------------------------------
    async def trip(self, reasons: list[str]) -> None:
        reason = "; ".join(reasons)
        status = self.breaker.trip(BreakerState.HALTED, "watchdog", reason)
        self.trips += 1
        self._event("breaker_trip", reason, "critical", {"generation": status.generation})
        try:
            self.broker.global_cancel()
        except Exception as exc:
            self._event("global_cancel_failed", str(exc), "critical")
        await self.flatten(status.generation)
        self._kill_frozen_main(reasons)

    def _kill_frozen_main(self, reasons: list[str]) -> None:
        if not self.cfg.watchdog.kill_frozen_main:
            return
        if not any("stale" in r or "stopped" in r or "progress" in r for r in reasons):
            return
        hb = read_heartbeat(self.data_dir / MAIN_HEARTBEAT)
        if hb is None:
            return
        try:
            proc = psutil.Process(hb.pid)
            if "python" not in (proc.name() + " ".join(proc.cmdline()[:2])).lower():
                return  # the pid was reused by something else: leave it alone
            proc.kill()  # SIGKILL: the only signal a SIGSTOPped process cannot ignore
            self._event("main_killed", f"frozen main loop {hb.pid} killed", "critical")
        except psutil.NoSuchProcess:
            pass
        except psutil.Error as exc:
            self._event("main_kill_failed", f"could not kill main loop {hb.pid}: {exc}")

    def _close_request(
        self, p: PositionView, attempt: int, generation: int, limit: float | None
    ) -> OrderRequest:
        action = "SELL" if p.quantity > 0 else "BUY"
        return OrderRequest(
            p.symbol,
            p.sec_type,
            action,
            abs(p.quantity),
            "LMT" if limit is not None else "MKT",
            limit,
            p.expiry,
            p.strike,
            p.right,
            "DAY",
            "watchdog",
            None,
            None,
            f"g{generation}-a{attempt}",
        )

    async def _close(self, p: PositionView, attempt: int, generation: int) -> bool:
        w = self.cfg.watchdog
        limit = None
        if attempt < w.max_close_attempts and attempt <= 2:
            contract = await self.broker.qualify(p.symbol, p.sec_type, p.expiry, p.strike, p.right)
            q = await self.broker.quote(contract, max_wait_s=0.5) if contract else None
            if q is not None and q.bid > 0 and q.ask > 0:
                raw = (
                    q.bid * (1 - w.close_collar_pct)
                    if p.quantity > 0
                    else q.ask * (1 + w.close_collar_pct)
                )
                limit = max(0.01, round(raw, 2))
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
            self._event("close_refused", f"closing {p.key}: {'; '.join(verdict.reasons)}")
        return verdict.accepted

    async def flatten(self, generation: int) -> bool:
        """Close every position and confirm flat from the broker; True when flat."""
        w = self.cfg.watchdog
        for attempt in range(1, w.max_close_attempts + 1):
            if not self.broker.ready:  # no session: an empty position list proves nothing
                self._event(
                    "flatten_blocked",
                    "gateway unreachable: cannot close positions or confirm flat yet",
                )
                return False
            positions = self.broker.positions()
            if not positions:
                self._flat_generation = generation
                self._event("flat_confirmed", f"account flat (attempt {attempt})", "info")
                return True
            sent = await asyncio.gather(*(self._close(p, attempt, generation) for p in positions))
            if not any(sent):  # e.g. no intent could be stored: retry at the next poll
                self._event(
                    "flatten_blocked",
                    f"attempt {attempt}: no closing order could be sent; retrying at the next poll",
                )
                return False
            deadline = self.clock.monotonic() + w.close_wait_s
            while self.broker.positions() and self.clock.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if self.broker.positions():
                left = ", ".join(f"{p.key} {p.quantity:g}" for p in self.broker.positions())
                severity = "warning" if attempt < w.max_close_attempts - 1 else "critical"
                self._event("flatten_retry", f"attempt {attempt}: still open: {left}", severity)
                with contextlib.suppress(Exception):
                    self.broker.global_cancel()
        if not self.broker.positions():
            self._flat_generation = generation
            self._event("flat_confirmed", "account flat", "info")
            return True
        self._event(
            "flatten_failed",
            f"not flat after {w.max_close_attempts} attempts: a "
            "person must act (python -m runtime panic / the broker's own tools)",
        )
        return False

    async def poll_once(self) -> None:
        self.polls += 1
        status = self.breaker.status()
        reasons = self.check_main() + self.check_account()
        if self.broker.ready:
            with contextlib.suppress(Exception):
                await self.broker.holdings(quote_wait_s=0.2)  # keep closing quotes streaming
        if reasons and status.state is not BreakerState.HALTED:
            await self.trip(reasons)
        elif status.state is BreakerState.HALTED:
            if (
                self.broker.ready
                and self._flat_generation != status.generation
                and self.broker.positions()
            ):
                await self.flatten(status.generation)  # HALTED by anyone means: go flat
            if reasons:
                self._kill_frozen_main(reasons)

    async def panic(self, by: str, reason: str, client_id: int) -> bool:
        """The kill switch, usable without the daemon: trip HALTED, cancel all, go flat."""
        self.store = await asyncio.to_thread(
            Store.open, self.data_dir, busy_timeout_ms=self.cfg.data.busy_timeout_ms, name="panic"
        )
        self.breaker = CircuitBreaker(self.data_dir, self.store)
        status = self.breaker.trip(BreakerState.HALTED, "person", f"panic by {by}: {reason}")
        self._event("panic", f"panic by {by}: {reason}", "critical")
        self.broker = Broker(
            self.cfg.broker,
            self.cfg.mode,
            self.secrets,
            self.store,
            client_id=client_id,
            source="panic",
            intent_sources=("watchdog",),
            monotonic=self.clock.monotonic,
        )
        try:
            await self.broker.connect()
            self.broker.global_cancel()
            await self.broker.holdings(quote_wait_s=1.0)
            return await self.flatten(status.generation)
        finally:
            await self.broker.close()
            await asyncio.to_thread(self.store.close, 5.0)

    # --- run -----------------------------------------------------------------------------------
    async def run(self) -> int:
        # open_timeout_s=None: watch at once; records queue until the database opens
        self.store = Store.open(
            self.data_dir,
            busy_timeout_ms=min(WATCHDOG_BUSY_TIMEOUT_MS, self.cfg.data.busy_timeout_ms),
            open_timeout_s=None,
            name="watchdog",
        )
        self.breaker = CircuitBreaker(self.data_dir, self.store)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        hb_task = loop.create_task(self._heartbeat_loop(), name="watchdog-heartbeat")
        self.broker = Broker(
            self.cfg.broker,
            self.cfg.mode,
            self.secrets,
            self.store,
            client_id=self.cfg.broker.watchdog_client_id,
            source="watchdog",
            intent_sources=("watchdog",),
            monotonic=self.clock.monotonic,
        )
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
        with contextlib.suppress(BaseException):
            await hb_task
        with contextlib.suppress(OSError):
            write_heartbeat(self.data_dir / WATCHDOG_HEARTBEAT, self.clock, self.polls, "stopped")
        await self.broker.close()
        await asyncio.to_thread(self.store.close, 5.0)
        return 0
